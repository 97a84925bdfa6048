-- The records whose identity.person_map row a daily build rewrites (macro person_map_is_incremental), with their
-- new row: the event records whose versions may have changed (is_present false for those no longer staged, so
-- person_map drops them), every record of the small sources, and the records of nodes whose person or rule
-- changed (macros/incremental.sql, "Incremental identity.person_map"). person_id_history compares only these
-- with the previous map: any other record keeps its person. Empty when person_map is built in full.
-- depends_on: {{ source('web', 'web_events') }}
-- depends_on: {{ source('email', 'email_events') }}

{%- set daily = person_map_is_incremental() %}

with

records as (

    select * from {{ ref('int_identity_records_unioned') }}

),

nodes as (

    select * from {{ ref('int_identity_nodes_personed') }}

),

nodes_changed as (

    {% if daily -%}
    {{ person_map_nodes_changed() }}
    {%- else -%}
    select null::varchar as node_id
    {%- endif %}

),

events_changed as (

    {% if daily -%}
    {{ person_map_events_changed() }}
    {%- else -%}
    select
        null::varchar as source_entity,
        null::varchar as source_record_id
    {%- endif %}

),

records_to_remap as (

    -- filtered before the nodes are joined: the records are tens of millions, a day's share a sliver
    select records.*
    from records
    left join events_changed
        on
            records.source_entity = events_changed.source_entity
            and records.source_record_id = events_changed.source_record_id
    where
        {{ daily }}
        and (
            records.source_entity not in ({{ person_map_event_entities() }})
            or events_changed.source_record_id is not null
            or records.node_id in (select nodes_changed.node_id from nodes_changed)
        )

),

remapped as (

    {{ personed_records('records_to_remap', 'nodes') }}

),

final as (

    select
        *,
        true as is_present,
        '{{ invocation_id }}' as invocation_id
    from remapped

    union all

    select
        events_changed.source_entity,
        events_changed.source_record_id,
        null::varchar as person_id,
        null::varchar as match_rule,
        null::double as match_probability,
        false as is_present,
        '{{ invocation_id }}' as invocation_id
    from events_changed
    anti join remapped
        on
            events_changed.source_entity = remapped.source_entity
            and events_changed.source_record_id = remapped.source_record_id
    where {{ daily }}

)

select * from final
