{#-
  The Markov chain's moves, kept per person so that a daily build counts again only the persons whose journeys
  may have changed (attribution_markov_transitions sums them).

  A person's journeys follow from the person's touches (fct_touchpoints) and conversion paths
  (fct_conversion_paths), and the paths from the same touches, the person's purchases and
  var('attribution_lookback_days'). fct_conversion_paths keeps a fingerprint of exactly those inputs per person
  (intermediate.fct_conversion_paths__inputs, macros/incremental.sql). So the moves keep a copy of the
  fingerprints they were counted from, and a daily build counts again the persons whose fingerprint changed,
  appeared or went since: one comparison of two per-person tables, no pass over the touches. Every other
  person's moves are what a rebuild counts. A --full-refresh, a missing table or a fingerprint of another
  form counts every person again. The erasure deletes an erased person's rows from both tables, as from every
  table with a person id in `intermediate`.
-#}

{% macro markov_person_moves_table() -%}
    intermediate.attribution_markov_transitions__person_moves
{%- endmacro %}

{% macro markov_moves_inputs_table() -%}
    intermediate.attribution_markov_transitions__inputs
{%- endmacro %}

{% macro markov_rederived_persons_table() -%}
    intermediate.attribution_markov_transitions__rederived
{%- endmacro %}

{#- The moves of every journey of the persons `persons` names (a relation with a person_id column), or of
    every person: (person_id, from_state, to_state, transitions_count). A converting journey is a purchase's
    conversion path. A journey that did not convert is a run of a person's touches on no conversion path, split
    where two touches are more than var('attribution_lookback_days') days apart (the window in which a touch can
    count for a purchase). -#}
{% macro markov_person_moves(persons=none) -%}
    {%- set of_persons -%}
        {%- if persons is not none %} where person_id in (select persons.person_id from {{ persons }} as persons)
        {%- endif -%}
    {%- endset -%}
    with conversion_paths as (
        select * from {{ ref('fct_conversion_paths') }}{{ of_persons }}
    ),
    touchpoints as (
        select * from {{ ref('fct_touchpoints') }}{{ of_persons }}
    ),
    unconverted_touches as (
        select
            touchpoints.person_id,
            touchpoints.touchpoint_id,
            touchpoints.touched_at,
            touchpoints.channel,
            coalesce(
                date_diff(
                    'second',
                    lag(touchpoints.touched_at) over (
                        partition by touchpoints.person_id
                        order by touchpoints.touched_at asc, touchpoints.touchpoint_id asc
                    ),
                    touchpoints.touched_at
                ) > {{ var("attribution_lookback_days") }} * 86400,
                true
            ) as starts_journey
        from touchpoints
        anti join conversion_paths on touchpoints.touchpoint_id = conversion_paths.touchpoint_id
    ),
    steps as (
        select person_id, 'conversion|' || order_id as journey_id, touchpoint_id, touched_at, channel,
            '(conversion)' as journey_end
        from conversion_paths
        union all
        select
            person_id,
            'null|' || person_id || '|' || cast(
                sum(cast(starts_journey as integer)) over (
                    partition by person_id order by touched_at asc, touchpoint_id asc
                ) as varchar
            ),
            touchpoint_id, touched_at, channel, '(null)'
        from unconverted_touches
    ),
    moves as (
        -- into every touch from the one before it (or from the start), and out of the last one to the journey's end
        select
            person_id,
            coalesce(
                lag(channel) over (partition by journey_id order by touched_at asc, touchpoint_id asc), '(start)'
            ) as from_state,
            channel as to_state
        from steps
        union all
        select
            any_value(person_id),
            arg_max(channel, (touched_at, touchpoint_id)),
            any_value(journey_end)
        from steps
        group by journey_id
    )
    select person_id, from_state, to_state, count(*) as transitions_count
    from moves
    group by person_id, from_state, to_state
{%- endmacro %}

{#- The column names of a 'schema.table' in this warehouse, in order, as the warehouse has them at this moment
    (none when there is no such table). Asked of DuckDB, not of dbt's relation cache: the cache is filled when
    the invocation starts, and misses a table a hook made since (fct_conversion_paths' fingerprints on a first
    build). -#}
{% macro table_columns_now(qualified) -%}
    {%- if not execute -%}{{ return(none) }}{%- endif -%}
    {%- set parts = (qualified | trim).split('.') -%}
    {%- set found = run_query(
        "select string_agg(column_name, ',' order by column_index) from duckdb_columns() "
        ~ "where database_name = current_database() and schema_name = '" ~ parts[0]
        ~ "' and table_name = '" ~ parts[1] ~ "'"
    ) -%}
    {{ return(found.columns[0].values()[0]) }}
{%- endmacro %}

{#- Whether the kept moves can be brought up to date person by person: no --full-refresh, and the moves, the
    fingerprints they were counted from and today's fingerprints all exist, the two fingerprints with the same
    columns. -#}
{% macro markov_moves_build_daily() -%}
    {%- if not execute or flags.FULL_REFRESH -%}{{ return(false) }}{%- endif -%}
    {%- set kept = table_columns_now(markov_moves_inputs_table()) -%}
    {{ return(
        table_columns_now(markov_person_moves_table()) is not none
        and kept is not none
        and kept == table_columns_now(conversion_path_inputs_table())
    ) }}
{%- endmacro %}

{#- Pre-hook of attribution_markov_transitions: the kept moves brought up to date (every person's counted again
    when markov_moves_build_daily says no), then today's fingerprints kept as the next build's "before". -#}
{% macro update_markov_person_moves() -%}
    create schema if not exists intermediate;
    {%- if markov_moves_build_daily() %}
    create or replace table {{ markov_rederived_persons_table() }} as
    {{ persons_whose_path_inputs_differ(conversion_path_inputs_table(), markov_moves_inputs_table()) }};
    delete from {{ markov_person_moves_table() }}
    where person_id in (select rederived.person_id from {{ markov_rederived_persons_table() }} as rederived);
    insert into {{ markov_person_moves_table() }}
    {{ markov_person_moves(markov_rederived_persons_table()) }};
    {%- else %}
    create or replace table {{ markov_person_moves_table() }} as
    {{ markov_person_moves() }};
    {%- endif %}
    {%- if table_columns_now(conversion_path_inputs_table()) is not none %}
    create or replace table {{ markov_moves_inputs_table() }} as
    select * from {{ conversion_path_inputs_table() }};
    {%- else %}
    drop table if exists {{ markov_moves_inputs_table() }};
    {%- endif %}
{%- endmacro %}
