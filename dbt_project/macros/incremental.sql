{#
  Incremental staging of append-heavy sources (the web and email events): a daily run re-derives only the keys
  whose versions may have changed, and gives the same table as a rebuild (tests/test_incremental_staging.py runs
  both side by side, day after day).

  A key may have changed when one of its raw versions is
  - in a batch the table was not built from, or in one whose row count changed since (an erasure deleted rows
    from it, a reload replaced it): the batches and their counts are recorded per model in
    audit.staged_batches after every build;
  - between the previous build's as-of end and this one's, either way: a day moved into view, or, when a run
    goes back in time (a backfill), out of it. The rows that went out of view are deleted before the insert
    (staged_out_of_view, a pre-hook).
  For those keys every raw version is read again, so the latest-version rule (as_of_latest_version) sees all of
  them, as a rebuild would; delete+insert on the key replaces their rows.

  What this cannot see is handled outside: an erasure forgets the batches holding surviving versions of the
  events it removed (privacy/erasure.py forget_staged_batches), and a staged batch gone from raw makes the
  pipeline rebuild (touchpoint/incremental.py).

  Without recorded state (a table built before this existed), every key is re-derived: a rebuild's result,
  slower than one. The pipeline passes dbt's --full-refresh then (touchpoint/incremental.py), as it does for
  `touchpoint run --full-refresh` and every TOUCHPOINT_FULL_REFRESH_EVERY_DAYS days; a bare `dbt build`
  on such a warehouse takes this path.
#}

{#- The relation a 'schema.table' name (as the state macros in this file give them) names in this warehouse, or
    none when it does not exist yet. -#}
{% macro existing_relation(qualified) -%}
    {%- if not execute -%}{{ return(none) }}{%- endif -%}
    {%- set parts = (qualified | trim).split('.') -%}
    {{ return(adapter.get_relation(database=this.database, schema=parts[0], identifier=parts[1])) }}
{%- endmacro %}

{% macro staged_state_table() -%}audit.staged_batches{%- endmacro %}

{#- on-run-start: the state table exists before models run, two at a time, and record into it. -#}
{% macro create_staged_state_table() -%}
    create schema if not exists audit;
    create table if not exists {{ staged_state_table() }} (
        model varchar, batch_id varchar, rows bigint, as_of_end timestamp, full_build_end timestamp,
        invocation_id varchar
    );
{%- endmacro %}

{#- The previous build's as-of end for this model, or none (no state). The table exists: on-run-start.
    `state`: the name the model records its batches under (this model's, unless it records several sources). -#}
{% macro previous_staged_end(state=none) -%}
    {%- if not execute -%}{{ return(none) }}{%- endif -%}
    {%- set ends = run_query(
        "select max(as_of_end) from " ~ staged_state_table() ~ " where model = '" ~ (state or this.identifier) ~ "'"
    ) -%}
    {{ return(ends.columns[0].values()[0]) }}
{%- endmacro %}

{#- The `where` of an incremental staging model's source CTE: only the versions of keys that may have changed. -#}
{% macro staged_delta(relation, key, happened_at, state=none) -%}
    {%- if is_incremental() or state -%}
        {%- set previous_end = previous_staged_end(state) -%}
        {%- if previous_end is none %}
    where true
        {%- else %}
    where {{ key }} in (
        select {{ key }} from {{ relation }}
        where _batch_id in (
            select now_staged._batch_id
            from (select _batch_id, count(*) as rows from {{ relation }} group by _batch_id) as now_staged
            anti join (
                select batch_id, rows from {{ staged_state_table() }} where model = '{{ state or this.identifier }}'
            ) as before on now_staged._batch_id = before.batch_id and now_staged.rows = before.rows
        )
        or {{ happened_at }} >= least(timestamp '{{ previous_end }}', {{ as_of_end() }})
            and {{ happened_at }} < greatest(timestamp '{{ previous_end }}', {{ as_of_end() }})
    )
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- A pre-hook's statement: in an incremental build, delete the model's rows where `condition` holds (a full build
    replaces them all; a hook has to run some statement). -#}
{% macro delete_if_incremental(condition) -%}
    {%- if is_incremental() -%}
    delete from {{ this }} where {{ condition }}
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- Pre-hook: in an incremental run, the rows that are no longer in view (a run back in time). -#}
{% macro staged_out_of_view(happened_at) -%}
    {{ delete_if_incremental(happened_at ~ ' >= ' ~ as_of_end()) }}
{%- endmacro %}

{#- Post-hook: record what this build read (batch ids and row counts), its as-of end, and the as-of end of the
    model's last full build (what the rebuild schedule reads). A source with no batches at all (a history of
    orders without web or email events) gets one row with a null batch id, so the build is on record and the
    next one is incremental too. The new rows go in before the old ones go out. -#}
{% macro record_staged_batches(relation, state=none, incremental=none) -%}
    {%- set state = state or this.identifier -%}
    insert into {{ staged_state_table() }}
    select '{{ state }}', batches._batch_id, coalesce(batches.rows, 0), build.as_of_end, build.full_build_end,
        '{{ invocation_id }}'
    from (
        select
            {{ as_of_end() }} as as_of_end,
            {%- if (is_incremental() if incremental is none else incremental) %}
            coalesce((select max(full_build_end) from {{ staged_state_table() }} where model = '{{ state }}'),
                     {{ as_of_end() }}) as full_build_end
            {%- else %}
            {{ as_of_end() }} as full_build_end
            {%- endif %}
    ) as build
    left join (select _batch_id, count(*) as rows from {{ relation }} group by _batch_id) as batches on true;
    delete from {{ staged_state_table() }}
    where model = '{{ state }}' and invocation_id <> '{{ invocation_id }}';
{%- endmacro %}

{#- Incremental marts. fct_web_sessions re-derives the sessions whose row may have changed (below), and records
    them in rederived_sessions_table() before it builds (with the invocation id, and whether it re-derives all);
    fct_funnel_steps, which holds one row per session and step, re-derives the same sessions. -#}
{% macro rederived_sessions_table() -%}
    intermediate.fct_web_sessions__rederived
{%- endmacro %}

{#- The lookup purchases (macro lookup_purchases) fct_web_sessions' last build converted its sessions with: beside
    the identity internals (never published; privacy/erasure.py deletes an erased person's rows from it like from
    every table it cannot rebuild). -#}
{% macro lookup_purchases_seen() -%}
    intermediate.fct_web_sessions__lookup_purchases
{%- endmacro %}

{#- Post-hook of fct_web_sessions: the purchases this build converted with. -#}
{% macro remember_lookup_purchases() -%}
    create or replace table {{ lookup_purchases_seen() }} as
    {{ lookup_purchases(['person_id', 'order_id', 'ordered_at']) }}
{%- endmacro %}

{#- Pre-hook of fct_web_sessions, before the sessions out of view are deleted: the sessions this build re-derives. -#}
{% macro record_rederived_sessions() -%}
    create schema if not exists intermediate;
    create or replace table {{ rederived_sessions_table() }} as
    -- a first row says which build this is, and whether it re-derives every session
    select '{{ invocation_id }}' as invocation_id, null::varchar as session_key, {{ not is_incremental() }} as every_session
    {%- if is_incremental() %}
    union all
    select '{{ invocation_id }}', session_key, session_key is null from ({{ web_sessions_to_rederive() }})
    {%- endif %}
{%- endmacro %}

{#- Pre-hook of fct_web_sessions, after record_rederived_sessions: the rows of the sessions this build re-derives.
    delete+insert alone would keep the row of a session that no longer has any event. -#}
{% macro web_sessions_out_of_date() -%}
    {{ delete_if_incremental(is_rederived_session('session_id')) }}
{%- endmacro %}

{#- True for a session key this invocation's fct_web_sessions build re-derives: every key when it rebuilt them all
    or did not run in this invocation (the reader cannot know what changed then). -#}
{% macro is_rederived_session(session_key) -%}
    (
        {{ session_key }} in (select rederived.session_key from {{ rederived_sessions_table() }} as rederived)
        or exists (select 1 from {{ rederived_sessions_table() }} as rederived where rederived.every_session)
        or not exists (
            select 1 from {{ rederived_sessions_table() }} as rederived
            where rederived.invocation_id = '{{ invocation_id }}'
        )
    )
{%- endmacro %}

{#- The session keys whose fct_web_sessions row may differ from the previous build's, re-derived from all their
    events. A row depends on the session's events, their persons (their identity nodes' persons) and the
    purchases of its person, so a session is re-derived when
    - one of its events may have changed: a raw version in a batch the model was not built from, or between the
      previous build's as-of end and this one's (staged_delta, the staging tables' rule);
    - it holds an event of a person whose records moved since the previous build (identity.person_id_history,
      either side), or of a person whose lookup purchases changed (an order placed, cancelled, moved), or it was
      attributed to such a person: its person or its conversion may change;
    - it reaches past the earlier of the two as-of ends (a run back in time: its later events left the view;
      the pre-hook deletes the sessions that start there).
    - one of its events' earlier versions belonged to it: a changed event may have left it (for another
      session id), and a session left with no event has no row in a rebuild.
    Without the previous build's record (no state, no remembered purchases), every session (a null key). An
    erased person's sessions are deleted by the erasure itself. -#}
{% macro web_sessions_to_rederive() -%}
    {%- set previous_end = previous_staged_end() -%}
    {%- set seen = existing_relation(lookup_purchases_seen()) -%}
    {%- if previous_end is none or seen is none %}
    select null::varchar as session_key
    {%- else -%}
    {%- set since = "least(timestamp '" ~ previous_end ~ "', " ~ as_of_end() ~ ")" %}
    with

    changed_events as (
        -- every raw version of the events that may have changed (staged_delta keeps them all), with the session
        -- each version belongs to
        select
            {{ trimmed('event_id') }} as event_id,
            {{ web_session_key(staged_session_id('session_id'), trimmed('event_id')) }} as session_key
        from {{ source('web', 'web_events') }}
        {{ staged_delta(source('web', 'web_events'), trimmed('event_id'), 'occurred_at') }}
    ),

    moved as (
        {{ persons_moved_since(since) }}
    ),

    purchases as (
        {{ lookup_purchases(['person_id', 'order_id', 'ordered_at']) }}
    ),

    purchases_changed as (
        (select person_id, order_id, ordered_at from purchases
            except select person_id, order_id, ordered_at from {{ seen }})
        union all
        (select person_id, order_id, ordered_at from {{ seen }}
            except select person_id, order_id, ordered_at from purchases)
    ),

    affected_persons as (
        select person_id from moved
        union
        select person_id from purchases_changed
    ),

    affected_nodes as (
        select node_persons.node_id
        from ({{ node_persons(ref('int_identity_graph_resolved')) }}) as node_persons
        where node_persons.person_id in (select affected_persons.person_id from affected_persons)
    )

    select {{ web_session_key('events.session_id', 'events.event_id') }} as session_key
    from {{ ref('stg_web__events') }} as events
    where
        events.event_id in (select changed_events.event_id from changed_events)
        or {{ record_node('web_events', 'events') }} in (select affected_nodes.node_id from affected_nodes)
    union
    -- the sessions the changed events' earlier versions belonged to: one whose events all moved to another
    -- session id is re-derived into no row (the pre-hook web_sessions_out_of_date deletes it)
    select session_key from changed_events
    union
    select session_id as session_key
    from {{ this }}
    where ended_at >= {{ since }} or person_id in (select affected_persons.person_id from affected_persons)
    {%- endif %}
{%- endmacro %}

{#- The persons on either side of a move the identity builds recorded since `since` (SQL, a timestamp): the
    previous build's as-of end or this one's, the earlier. A rerun of the previous build's day is included. The
    event marts re-derive these persons' rows: their records changed person. -#}
{% macro persons_moved_since(since) -%}
    select previous_person_id as person_id from {{ ref('person_id_history') }}
    where as_of >= cast({{ since }} - interval 1 day as date)
    union
    select person_id from {{ ref('person_id_history') }}
    where as_of >= cast({{ since }} - interval 1 day as date)
{%- endmacro %}

{#- Incremental fct_email_engagement (one row per person and campaign; append, after a pre-hook deletes the rows it
    re-derives). A row depends on the events of its person and campaign and on their nodes' persons, so a daily
    build re-derives, from all their events,
    - every (person, campaign) an event that may have changed belongs to: each raw version of it (staged_delta,
      the staging tables' rule: a batch not built from, or the days between the two builds' as-of ends), with
      the person its node has now and the person its latest version's node has (an address that vanished with
      the change leaves the person's old campaign to re-derive);
    - every row of a person on either side of a move since the previous build (persons_moved_since);
    - every row with an event past the earlier of the two as-of ends (a run back in time: those events left).
    The grain is (person, campaign), not the person: a campaign send reaches most of the list on its day (60% of
    the persons at 1M), and each of them gains a row but keeps the others. Without the previous build's record,
    every row (daily false). An erased person's rows are deleted by the erasure. -#}
{% macro email_engagement_builds_daily() -%}
    {{ return(is_incremental() and previous_staged_end() is not none) }}
{%- endmacro %}

{% macro rederived_engagements_table() -%}
    intermediate.fct_email_engagement__rederived
{%- endmacro %}

{#- Pre-hook of fct_email_engagement: what this build re-derives, as engagement ids with their person and
    campaign, and persons whose every campaign it re-derives (email_engagement_id and campaign_id null). -#}
{% macro record_rederived_engagements() -%}
    {%- if not email_engagement_builds_daily() -%}
    select 1
    {%- else -%}
    {%- set since = "least(timestamp '" ~ previous_staged_end() ~ "', " ~ as_of_end() ~ ")" -%}
    create schema if not exists intermediate;
    create or replace table {{ rederived_engagements_table() }} as
    with

    changed_versions as materialized (
        select
            versions.event_id,
            {{ record_node('email_events', 'versions') }} as node_id,
            versions.campaign_id
        from (
            -- each raw version's columns as stg_email__events stages them
            select
                {{ trimmed('event_id') }} as event_id,
                {{ valid_email(clean_email('email')) }} as email,
                nullif(trim(campaign_id), '') as campaign_id
            from {{ source('email', 'email_events') }}
            {{ staged_delta(source('email', 'email_events'), trimmed('event_id'), 'occurred_at') }}
        ) as versions
    ),

    node_persons as (
        {{ node_persons(ref('int_identity_graph_resolved')) }}
    ),

    changed_staged as materialized (
        -- the latest (staged) version of each, found first: joined to the nodes after, not before
        select events.event_id, {{ record_node('email_events', 'events') }} as node_id
        from {{ ref('stg_email__events') }} as events
        where events.event_id in (select changed_versions.event_id from changed_versions)
    ),

    changed_persons as (
        -- each version's node's person now, and the person of the event's latest version's node
        select changed_versions.event_id, node_persons.person_id
        from changed_versions
        inner join node_persons on changed_versions.node_id = node_persons.node_id
        union
        select changed_staged.event_id, node_persons.person_id
        from changed_staged
        inner join node_persons on changed_staged.node_id = node_persons.node_id
    )

    select distinct
        {{ email_engagement_id('changed_persons.person_id', 'changed_versions.campaign_id') }} as email_engagement_id,
        changed_persons.person_id,
        {{ email_campaign_key('changed_versions.campaign_id') }} as campaign_id
    from changed_persons
    inner join changed_versions on changed_persons.event_id = changed_versions.event_id
    union
    select email_engagement_id, person_id, campaign_id from {{ this }} where last_event_at >= {{ since }}
    union
    select null, moved.person_id, null from ({{ persons_moved_since(since) }}) as moved
    {%- endif -%}
{%- endmacro %}

{#- Pre-hook of fct_email_engagement, after record_rederived_engagements: the rows it re-derives (every row when it
    cannot tell which), which the build then appends again; a row whose events all left gets none. -#}
{% macro email_engagements_out_of_date() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- elif email_engagement_builds_daily() -%}
    delete from {{ this }} where {{ is_rederived_engagement('email_engagement_id', 'person_id') }}
    {%- else -%}
    delete from {{ this }}
    {%- endif -%}
{%- endmacro %}

{#- The campaigns of the engagements a daily build re-derives: it reads their events, and the persons' re-derived
    whole, before it joins them to persons. A send reaches most of the list, whose persons hold most of the events
    of every other campaign: joining all their events first was 8.6 s of the 1M campaign-send day, this 2.2 s. -#}
{% macro is_rederived_campaign_or_node(campaign_key, node_id, node_persons) -%}
    {%- set rederived = rederived_engagements_table() -%}
    ({{ campaign_key }} in (select campaign_id from {{ rederived }}) or {{ node_id }} in
    (select node_id from {{ node_persons }} where person_id in
    (select person_id from {{ rederived }} where email_engagement_id is null)))
{%- endmacro %}

{#- True for an engagement the daily build re-derives (record_rederived_engagements). -#}
{% macro is_rederived_engagement(engagement_id, person_id) -%}
    {%- set rederived = rederived_engagements_table() -%}
    ({{ engagement_id }} in (select email_engagement_id from {{ rederived }}) or {{ person_id }} in
    (select person_id from {{ rederived }} where email_engagement_id is null))
{%- endmacro %}

{#- Incremental fct_conversion_paths, by person. A person's paths follow from the person's touches
    (fct_touchpoints) and purchases (lookup_purchases) alone, and from var('attribution_lookback_days'). So each
    build keeps a fingerprint of every person's inputs, and a daily build re-derives the persons whose fingerprint
    changed, appeared or went: a new touch or purchase, a corrected one, a merge or split (the rows carry the
    person), a run back in time. The fingerprint is the checksum of the person's input rows (macros/checksums.sql:
    the row count and two sums of hashes of each input row).
    Without a fingerprint (a table built before this existed), every row is re-derived. -#}
{% macro conversion_path_inputs_table() -%}
    intermediate.fct_conversion_paths__inputs
{%- endmacro %}

{% macro conversion_path_inputs_now_table() -%}
    intermediate.fct_conversion_paths__inputs_now
{%- endmacro %}

{% macro rederived_conversion_persons_table() -%}
    intermediate.fct_conversion_paths__rederived
{%- endmacro %}

{#- The purchase columns a path reads (lookup_purchases): the model and its fingerprint read the same. -#}
{% macro conversion_path_purchase_columns() -%}
    {{ return(['order_id', 'person_id', 'ordered_at', 'order_date', 'channel as order_channel', 'net_amount']) }}
{%- endmacro %}

{#- A daily build needs the previous build's fingerprints, in today's form (shifted_hash_sum: a table kept by a
    release before it re-derives every person once). -#}
{% macro conversion_paths_build_daily() -%}
    {%- if not is_incremental() -%}{{ return(false) }}{%- endif -%}
    {%- set remembered = existing_relation(conversion_path_inputs_table()) -%}
    {%- if remembered is none -%}{{ return(false) }}{%- endif -%}
    {{ return('shifted_hash_sum' in adapter.get_columns_in_relation(remembered) | map(attribute='name') | list) }}
{%- endmacro %}

{#- Pre-hook of fct_conversion_paths: every person's fingerprint now; in a daily build, the persons to re-derive. -#}
{% macro record_rederived_conversion_persons() -%}
    create schema if not exists intermediate;
    create or replace table {{ conversion_path_inputs_now_table() }} as
    select
        person_id,
        {{ checksum_aggregates() }},
        {{ var('attribution_lookback_days') }} as lookback_days
    from (
        select
            person_id,
            {{ checksum_row_hashes('*columns(*)', shifted_values(adapter.get_columns_in_relation(ref('fct_touchpoints')))) }}
        from {{ ref('fct_touchpoints') }}
        union all
        select
            purchases.person_id,
            {{ checksum_row_hashes('*columns(*)', shifted_values(['purchases.order_id', 'purchases.order_channel'])) }}
        from ({{ lookup_purchases(conversion_path_purchase_columns()) }}) as purchases
    ) as inputs
    group by person_id;
    {%- if conversion_paths_build_daily() %}
    create or replace table {{ rederived_conversion_persons_table() }} as
    {{ persons_whose_path_inputs_differ(conversion_path_inputs_now_table(), conversion_path_inputs_table()) }};
    {%- endif %}
{%- endmacro %}

{#- The persons whose path-input fingerprint differs between the fingerprint tables `now` and `before`: changed,
    appeared, gone, or counted with another lookback. Read by fct_conversion_paths and the Markov moves. -#}
{% macro persons_whose_path_inputs_differ(now, before) -%}
    select coalesce(now.person_id, before.person_id) as person_id
    from {{ now }} as now
    full outer join {{ before }} as before on now.person_id = before.person_id
    where {{ checksums_differ('now', 'before') }} or now.lookback_days is distinct from before.lookback_days
{%- endmacro %}

{#- Pre-hook of fct_conversion_paths, after record_rederived_conversion_persons: the rows it re-derives (every row
    when it cannot tell which); a person whose touches or purchases all went gets none back. -#}
{% macro conversion_paths_out_of_date() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- elif conversion_paths_build_daily() -%}
    delete from {{ this }} where {{ is_rederived_conversion_person('person_id') }}
    {%- else -%}
    delete from {{ this }}
    {%- endif -%}
{%- endmacro %}

{% macro is_rederived_conversion_person(person_id) -%}
    {{ person_id }} in (select rederived.person_id from {{ rederived_conversion_persons_table() }} as rederived)
{%- endmacro %}

{#- Post-hook of fct_conversion_paths: the fingerprints it was built from are the next build's "before". -#}
{% macro remember_conversion_path_inputs() -%}
    drop table if exists {{ conversion_path_inputs_table() }};
    alter table {{ conversion_path_inputs_now_table() }}
    rename to {{ (conversion_path_inputs_table() | trim).split('.')[-1] }};
{%- endmacro %}

{#- fct_funnel_steps: the funnel definition (seed funnel_steps) its rows were built with, so that a changed
    definition re-derives every session. -#}
{% macro funnel_definition_table() -%}
    intermediate.fct_funnel_steps__definition
{%- endmacro %}

{% macro funnel_definition() -%}
    (
        select md5(string_agg(
            concat_ws('|', funnel_name, step_number, step_name, event_type, coalesce(page_url_like, '(any)')),
            ';' order by funnel_name, step_number
        ))
        from {{ ref('funnel_steps') }}
    )
{%- endmacro %}

{#- Post-hook of fct_funnel_steps: the definition, and whether this build (the invocation) re-derived every session
    (a full build, or a changed definition), which funnel_steps_written tells the tests after it. -#}
{% macro remember_funnel_definition() -%}
    {%- set remembered = existing_relation(funnel_definition_table()) %}
    create schema if not exists intermediate;
    create or replace table {{ funnel_definition_table() }} as
    select {{ funnel_definition() }} as definition, '{{ invocation_id }}' as invocation_id,
        {% if is_incremental() and remembered is not none -%}
        not exists (select 1 from {{ remembered }} where definition = {{ funnel_definition() }})
        {%- else -%}
        true
        {%- endif %} as every_session
{%- endmacro %}

{#- True for a session whose funnel steps this build re-derives: fct_web_sessions re-derived it, or the funnel
    definition is not the one the table was built with. -#}
{% macro is_rederived_funnel_session(session_key) -%}
    {{ funnel_sessions(session_key, 'definition = ' ~ funnel_definition()) }}
{%- endmacro %}

{#- After fct_funnel_steps' build: true for a session whose rows this invocation wrote, every session when it
    re-derived them all or did not build the model (macros/test_scope.sql), or when the remembered definition
    comes from a version that did not record builds (no every_session column: `dbt test` after an upgrade, before
    the model's first build). -#}
{% macro funnel_steps_written(session_key) -%}
    {%- set remembered = existing_relation(funnel_definition_table()) -%}
    {%- if remembered is not none
        and 'every_session' not in adapter.get_columns_in_relation(remembered) | map(attribute='name') | list -%}
    true
    {%- else -%}
    {{ funnel_sessions(session_key, "invocation_id = '" ~ invocation_id ~ "' and not every_session") }}
    {%- endif -%}
{%- endmacro %}

{#- The two above: the sessions fct_web_sessions re-derived, or every session unless the remembered definition's
    row meets `only_those_if` (every session when nothing is remembered). -#}
{% macro funnel_sessions(session_key, only_those_if) -%}
    {%- set remembered = existing_relation(funnel_definition_table()) -%}
    {%- if remembered is none -%}
    true
    {%- else -%}
    (
        {{ is_rederived_session(session_key) }}
        or not exists (select 1 from {{ remembered }} where {{ only_those_if }})
    )
    {%- endif -%}
{%- endmacro %}

{#- Pre-hook of fct_funnel_steps: in an incremental build, the rows of the sessions it re-derives go first, so a
    session that now reaches no step (or no longer exists) keeps no row. -#}
{% macro funnel_steps_out_of_date() -%}
    {{ delete_if_incremental(is_rederived_funnel_session('session_id')) }}
{%- endmacro %}

{#- Incremental identity.person_map. A record's row (person, match rule, probability) follows from the record
    (its node, macro record_node, and its attach rule) and its node's row in int_identity_nodes_personed. So a
    daily build rewrites only the records
    - of the event sources whose versions may have changed (staged_delta over their raw batches, recorded under
      the states below in audit.staged_batches), including those that left the view;
    - of the small sources (contacts, customers, orders, POS: a tenth of the records), every one, every day;
    - attached to a node whose row differs from the one the previous build used (kept in
      person_map_nodes_seen()): a merge, a split, a new strongest link, a changed probability.
    Every other record keeps its row, which is the rebuild's (tests/test_incremental_identity.py). The graph
    itself is resolved over all nodes every run (docs/identity_engine.md, "Daily runs"). -#}
{% macro person_map_event_sources() -%}
    {{ return([
        {'state': 'person_map:web_events', 'source': 'web', 'entity': 'web_events'},
        {'state': 'person_map:email_events', 'source': 'email', 'entity': 'email_events'},
    ]) }}
{%- endmacro %}

{% macro person_map_nodes_seen() -%}intermediate.person_map__nodes{%- endmacro %}

{#- The event sources' entity names as a SQL list ('web_events', 'email_events'): the records not in them are
    rewritten every day. -#}
{% macro person_map_event_entities() -%}
    {%- for events in person_map_event_sources() %}'{{ events.entity }}'{{ ', ' if not loop.last }}{% endfor -%}
{%- endmacro %}

{#- A node's row, what person_map_nodes_seen() keeps and the next build compares. -#}
{% macro person_map_node_columns() -%}node_id, person_id, match_rule, match_probability{%- endmacro %}

{#- Whether int_records_remapped finds the records to rewrite: a person_map and the nodes it was built with
    exist, and no --full-refresh. (A source with no recorded batches yet has all its events rewritten.) -#}
{% macro person_map_is_incremental() -%}
    {%- if not execute or flags.FULL_REFRESH -%}{{ return(false) }}{%- endif -%}
    {{ return(
        existing_relation('identity.person_map') is not none
        and existing_relation(person_map_nodes_seen()) is not none
    ) }}
{%- endmacro %}

{#- Whether person_map and person_id_history read int_records_remapped: it was built in this invocation, and
    found the records (a `dbt run -s person_map` alone, or after a full build, rebuilds instead). -#}
{% macro person_map_builds_daily() -%}
    {%- if not person_map_is_incremental() -%}{{ return(false) }}{%- endif -%}
    {%- set remapped = adapter.get_relation(
        database=this.database, schema='intermediate', identifier='int_records_remapped'
    ) -%}
    {%- if remapped is none -%}{{ return(false) }}{%- endif -%}
    {%- set found = run_query(
        "select count(*) from " ~ remapped ~ " where invocation_id = '" ~ invocation_id ~ "'"
    ) -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{%- endmacro %}

{#- The event records (source_entity, source_record_id) whose versions may have changed since the last build. -#}
{% macro person_map_events_changed() -%}
    {%- for events in person_map_event_sources() %}
    {% if not loop.first %}union all{% endif %}
    select distinct '{{ events.entity }}' as source_entity, {{ trimmed('event_id') }} as source_record_id
    from {{ source(events.source, events.entity) }}
    {{ staged_delta(source(events.source, events.entity), trimmed('event_id'), 'occurred_at', events.state) }}
    {%- endfor %}
{%- endmacro %}

{#- The nodes whose person_map row differs from the previous build's (new and vanished nodes included). -#}
{% macro person_map_nodes_changed() -%}
    {%- set columns = person_map_node_columns() -%}
    select node_id from (
        (select {{ columns }} from {{ ref('int_identity_nodes_personed') }}
            except select {{ columns }} from {{ person_map_nodes_seen() }})
        union all
        (select {{ columns }} from {{ person_map_nodes_seen() }}
            except select {{ columns }} from {{ ref('int_identity_nodes_personed') }})
    )
{%- endmacro %}

{#- Pre-hook: the rows the build rewrites (all of them when it cannot tell which). -#}
{% macro person_map_remove_remapped() -%}
    {%- if not is_incremental() -%}
    select 1
    {%- elif person_map_builds_daily() -%}
    delete from {{ this }} where source_entity not in ({{ person_map_event_entities() }});
    delete from {{ this }} as map using {{ ref('int_records_remapped') }} as remapped
    where map.source_entity = remapped.source_entity and map.source_record_id = remapped.source_record_id
    {%- else -%}
    delete from {{ this }}
    {%- endif -%}
{%- endmacro %}

{#- Post-hook: what the next build compares with: the event batches read and the nodes' rows. -#}
{% macro remember_person_map_build() -%}
    {%- set incremental = person_map_builds_daily() -%}
    {%- for events in person_map_event_sources() %}
    {{ record_staged_batches(source(events.source, events.entity), events.state, incremental) }}
    {%- endfor %}
    create or replace table {{ person_map_nodes_seen() }} as
    select {{ person_map_node_columns() }} from {{ ref('int_identity_nodes_personed') }};
{%- endmacro %}


{#- A post-hook of the Python incremental models (int_person_pairs_scored). For a Python model, dbt-duckdb
    builds the new rows of an incremental run into a plain table `main.<model>__dbt_tmp<timestamp>` and never
    drops it (it takes it for a temporary table): left there, it would hold a copy of the rows in the warehouse
    file, and publish refuses tables it cannot classify. Drops this model's, and any left by an earlier
    failure. -#}
{% macro drop_python_model_leftovers() -%}
    {%- if execute -%}
        {%- set found = run_query(
            "select table_name from duckdb_tables() where database_name = current_database() "
            ~ "and schema_name = 'main' and starts_with(table_name, '" ~ this.identifier ~ "__dbt_tmp')") -%}
        {%- for row in found.rows -%}
            {%- do run_query('drop table main."' ~ row[0] ~ '"') -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}
