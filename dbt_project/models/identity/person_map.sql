-- depends_on: {{ ref('person_id_history') }}
-- (history is computed from the previous map first, so this table is changed only after it)
-- depends_on: {{ ref('int_records_remapped') }}
-- depends_on: {{ ref('int_identity_nodes_personed') }}
-- Incremental: a daily build rewrites only int_records_remapped's records and gives the rebuild's rows
-- (macros/incremental.sql, "Incremental identity.person_map"; tests/test_incremental_identity.py); writing every
-- record was 38 s of the 1M identity layer.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ person_map_remove_remapped() }}",
    post_hook="{{ remember_person_map_build() }}",
) }}

{%- set daily = person_map_builds_daily() %}

with

personed as (

    {% if daily -%}
    select * from {{ ref('int_records_remapped') }}
    where is_present
    {%- else -%}
    select * from {{ ref('int_records_personed') }}
    {%- endif %}

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
