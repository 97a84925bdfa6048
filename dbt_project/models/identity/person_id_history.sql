-- a history: never rebuilt by --full-refresh. Keyed by history_id (as of, previous and new person): a retry of a
-- day whose build failed after this model and before person_map finds the same moves and replaces their rows
-- instead of adding them again (which would fail the unique test on every later build).
{{ config(materialized='incremental', full_refresh=false, incremental_strategy='delete+insert', unique_key='history_id') }}

-- depends_on: {{ ref('int_records_remapped') }}
{%- set previous_map = adapter.get_relation(database=this.database, schema=this.schema, identifier='person_map') %}
{#- a daily build: only the records person_map rewrites can have moved; the persons present are read off the
    nodes (int_identity_nodes_personed now, person_map_nodes_seen() at the previous build) -#}
{%- set daily = person_map_builds_daily() %}

with

current_map as (

    {% if daily -%}
    select * from {{ ref('int_records_remapped') }}
    where is_present
    {%- else -%}
    select * from {{ ref('int_records_personed') }}
    {%- endif %}

),

{% if previous_map is not none and execute -%}
previous_map as (

    select * from {{ previous_map }}

),
{%- else -%}
previous_map as (

    -- first run in this warehouse: nothing to compare with
    select
        source_entity,
        source_record_id,
        person_id,
    from current_map
    where false

),
{%- endif %}

moves as (

    select
        previous_map.person_id as previous_person_id,
        current_map.person_id,
        count(*) as records_moved,
    from previous_map
    inner join current_map
        on
            previous_map.source_entity = current_map.source_entity
            and previous_map.source_record_id = current_map.source_record_id
    where previous_map.person_id <> current_map.person_id
    group by previous_map.person_id, current_map.person_id

),

still_present as (

    select distinct person_id from {{ ref('int_identity_nodes_personed') }}

),

previously_present as (

    {% if daily -%}
    select distinct person_id from {{ person_map_nodes_seen() }}
    {%- else -%}
    select distinct person_id from previous_map
    {%- endif %}

),

sources_per_new_id as (

    select
        person_id,
        count(*) as previous_ids,
    from moves
    group by person_id

),

classified as (

    select
        md5(
            '{{ as_of() }}' || '|' || moves.previous_person_id || '|' || moves.person_id
        ) as history_id,
        cast('{{ as_of() }}' as date) as as_of,
        moves.previous_person_id,
        moves.person_id,
        case
            when still_present.person_id is not null then 'split'
            when previously_present.person_id is not null or sources_per_new_id.previous_ids > 1 then 'merge'
            else 'renamed'
        end as change_type,
        moves.records_moved,
    from moves
    left join still_present
        on moves.previous_person_id = still_present.person_id
    left join previously_present
        on moves.person_id = previously_present.person_id
    inner join sources_per_new_id
        on moves.person_id = sources_per_new_id.person_id

)

select * from classified
