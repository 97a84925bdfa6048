-- One row per graph node that web or email events attach to, with what its events say about it: when it was first
-- seen, whether any of them is known (not an anonymous web event), and how many of each there are.
-- int_identity_nodes adds the other records (a tenth) to these rows instead of aggregating every record each run.
--
-- Incremental (delete+insert on node_id): a daily build finds the events whose versions may have changed (the
-- staging rule, with this model's own batches recorded under '<model>:<entity>') and writes only their nodes'
-- rows (macro event_nodes_daily): the nodes of an event read before are aggregated again from all their events,
-- an event new to the model is added to its node's previous row. Any other node's events are unchanged since the
-- last build, so its row is what a rebuild gives it (tests/test_incremental_identity.py compares
-- int_identity_nodes every day). An erasure drops the table (privacy/erasure.py): a deleted event names no raw
-- version any more, and its node would keep its count and its id, so the next build aggregates every event.
-- depends_on: {{ source('web', 'web_events') }}
-- depends_on: {{ source('email', 'email_events') }}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='node_id',
    post_hook="{{ remember_event_nodes_build() }}",
) }}

{%- set events = identity_event_sources(this.identifier) %}

with

records as (

    select * from {{ ref('int_identity_records_unioned') }}
    where source_entity in ({{ identity_event_entities() }})

),

final as (

    {{ event_nodes_daily(events, 'records') if is_incremental() else event_nodes_full('records') }}

)

select * from final
