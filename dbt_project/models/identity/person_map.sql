-- depends_on: {{ ref('person_id_history') }}
-- (history is computed from the previous map first, so this table is replaced only after it)

with

personed as (

    select * from {{ ref('int_records_personed') }}

),

final as (

    select
        source_entity,
        source_record_id,
        person_id,
        match_rule,
        match_probability
    from personed

)

select * from final
