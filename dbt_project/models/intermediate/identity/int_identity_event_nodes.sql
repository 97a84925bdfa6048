-- One row per graph node that web or email events attach to, with what its events say about it: when it was first
-- seen, whether any of them is known (not an anonymous web event), and how many of each there are.
-- int_identity_nodes adds the other records (a tenth) to these rows instead of aggregating every record each run.
--
-- Incremental: a daily build re-aggregates only the nodes that any raw version of a possibly changed event
-- attaches to (macro changed_event_nodes: the staging rule, with this model's own batches recorded under
-- '<model>:<entity>'), from all of those nodes' events; delete+insert on node_id replaces their rows, and a node
-- left with no event loses its row (post-hook). Any other node's events are unchanged since the last build, so
-- its row is what a rebuild gives it (tests/test_incremental_identity.py compares int_identity_nodes every
-- day). An erasure drops the table (privacy/erasure.py): a deleted event names no raw version any more, and its
-- node would keep its count and its id, so the next build aggregates every event again.
-- depends_on: {{ source('web', 'web_events') }}
-- depends_on: {{ source('email', 'email_events') }}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='node_id',
    post_hook="{{ remember_event_nodes_build() }}",
) }}

{%- set events = identity_event_sources(this.identifier) %}
{%- set daily = is_incremental() %}

with

records as (

    select * from {{ ref('int_identity_records_unioned') }}
    where source_entity in ({{ identity_event_entities() }})

),

nodes_touched as (

    {{ changed_event_nodes(events) if daily else 'select null::varchar as node_id' }}

),

aggregated as (

    select
        node_id,
        min(seen_at) as seen_at,
        bool_or(not is_anonymous) as has_known_record,
        count(*) filter (where source_entity = 'web_events') as web_events,
        count(*) filter (where source_entity = 'email_events') as email_events,
        count(*) as records
    from records
    where not {{ daily }} or node_id in (select nodes_touched.node_id from nodes_touched)
    group by node_id

),

final as (

    -- a touched node with no event left gets a row of none, so that delete+insert replaces its old row
    select
        coalesce(aggregated.node_id, nodes_touched.node_id) as node_id,
        aggregated.seen_at,
        coalesce(aggregated.has_known_record, false) as has_known_record,
        coalesce(aggregated.web_events, 0) as web_events,
        coalesce(aggregated.email_events, 0) as email_events,
        coalesce(aggregated.records, 0) as records
    from aggregated
    full outer join nodes_touched
        on aggregated.node_id = nodes_touched.node_id
    where coalesce(aggregated.node_id, nodes_touched.node_id) is not null

)

select * from final
