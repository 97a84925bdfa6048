{#
  Data tests scoped to the rows a build wrote. A test configured `where: __written_this_build__` reads only the
  rows the tested model's build in this invocation wrote (column `_invocation_id`, macro written_by), not the
  whole table: at 1M customers a daily build of the event tables rewrites about 1/730 of their 42M and 20M rows.
  On one 1M day these tests took 9.0-9.6 s in staging and 5.0-5.6 s in the marts over the whole tables, 1.4-1.9 s
  over the written rows (bench/results/L-2026-12-07-eleventh.md).

  For the tests so configured that is the whole table's check:
  - each holds row by row (not_null) or by key (unique), and a row no build rewrote is the row that passed the
    test when it was written: since then rows were only deleted (the erasure, retention, the out-of-view
    pre-hook), which breaks neither;
  - every earlier row holding a key this build wrote is gone (the event tables and fct_web_sessions are
    delete+insert on the tested key; fct_funnel_steps' pre-hook deletes the sessions its key holds): a duplicate
    has both of its rows among the written ones;
  - a build whose tests failed, or that never finished (interrupted, killed), leaves its rows behind, and the
    layer's next pipeline build is a full one (touchpoint/dbt.py, "last build failed"), which writes, and so
    tests, every row. Plain dbt has no such memory: after a failed or interrupted `dbt build` of your own, run the
    next one with --full-refresh (or `dbt test` alone, which reads every row).
  A full build writes every row. A model this invocation did not build (`dbt test` alone) has no row written by
  it, and then every row is tested. Only a test that exists on one model since the model's last full build (at
  most TOUCHPOINT_FULL_REFRESH_EVERY_DAYS days ago) sees just the newer rows until then: so the scope is for
  checks of the model's own rule (its key, its never-null columns), not for a new business rule.

  tests/test_incremental_staging.py and tests/test_incremental_marts.py plant earlier duplicates: a daily build's
  tests do not read them, `dbt test` alone does (and fails), a full build rewrites them away.
-#}

{#- The column every row of a model with scoped tests carries: the invocation that wrote it. -#}
{% macro written_by() -%}
    '{{ invocation_id }}' as _invocation_id
{%- endmacro %}

{#- The rows of `relation` this invocation wrote; all of them when it wrote none (it did not build the model). The
    web sessions and funnel steps, public marts, carry no _invocation_id: their builds record which sessions they
    re-derive (macros/incremental.sql), every one when they did not build in this invocation; a funnel step's id
    holds its session's, so an earlier row with a written key was of a re-derived session, which the pre-hook
    deleted. A null session id, which no recorded session matches, is always read (not_null is about it). -#}
{% macro written_this_build(relation) -%}
    {%- if relation.identifier == 'fct_web_sessions' -%}
    (session_id is null or {{ is_rederived_session('session_id') }})
    {%- elif relation.identifier == 'fct_funnel_steps' -%}
    (session_id is null or {{ funnel_steps_written('session_id') }})
    {%- else -%}
    (
        _invocation_id = '{{ invocation_id }}'
        or not exists (select 1 from {{ relation }} where _invocation_id = '{{ invocation_id }}')
    )
    {%- endif -%}
{%- endmacro %}

{#- dbt's own (global_project/macros/materializations/tests/where_subquery.sql), with the placeholder
    __written_this_build__ in a test's `where` replaced at run time: the invocation id is this run's, and a
    `where` rendered when the project is parsed would keep the parsing run's. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- set where = where | replace('__written_this_build__', written_this_build(relation)) -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
