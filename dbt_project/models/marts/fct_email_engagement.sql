-- One row per person and campaign: was the campaign sent, opened, clicked, bounced, unsubscribed from.
--
-- Incremental: a daily build deletes the (person, campaign) rows that may have changed (macro
-- record_rederived_engagements) and appends them again from all their events, and gives the rebuild's rows
-- (tests/test_incremental_marts.py).
-- depends_on: {{ ref('person_id_history') }}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook=[
        "{{ record_rederived_engagements() }}",
        "{{ email_engagements_out_of_date() }}",
    ],
    post_hook="{{ record_staged_batches(source('email', 'email_events')) }}",
) }}

{%- set daily = email_engagement_builds_daily() %}

with

node_persons as (

    -- an event's person is its identity node's (identity.person_map holds the same, one row per event); a daily
    -- build reads only the nodes of the persons it re-derives, so the events are joined to a few of them
    select
        graph_nodes.node_id,
        graph_nodes.person_id
    from ({{ node_persons(ref('int_identity_graph_resolved')) }}) as graph_nodes
    {%- if daily %}
        where graph_nodes.person_id in (
            select rederived.person_id from {{ rederived_engagements_table() }} as rederived
        )
    {%- endif %}

),

email_events as (

    select * from {{ ref('stg_email__events') }}
    {%- if daily %}
        where {{ is_rederived_campaign_or_node(
            email_campaign_key('campaign_id'), record_node('email_events'), 'node_persons'
        ) }}
    {%- endif %}

),

events_personed as (

    select
        email_events.*,
        {{ email_campaign_key('email_events.campaign_id') }} as campaign_key,
        node_persons.person_id
    from email_events
    inner join node_persons
        on {{ record_node('email_events', 'email_events') }} = node_persons.node_id
    {%- if daily %}
        where {{ is_rederived_engagement(
            email_engagement_id('node_persons.person_id', 'email_events.campaign_id'), 'node_persons.person_id'
        ) }}
    {%- endif %}

),

engagement as (

    select
        person_id,
        campaign_key,
        min(occurred_at) as first_event_at,
        max(occurred_at) as last_event_at,
        count(*) as events_count,
        -- an open or a click proves delivery even when the send itself was not exported
        bool_or(event_type in ('sent', 'send', 'delivered', 'open', 'opened', 'click', 'clicked')) as is_sent,
        bool_or(event_type in ('open', 'opened', 'click', 'clicked')) as is_opened,
        bool_or(event_type in ('click', 'clicked')) as is_clicked,
        bool_or(event_type in ('bounce', 'bounced')) as is_bounced,
        bool_or(event_type in ('unsubscribe', 'unsubscribed')) as is_unsubscribed,
        max(occurred_at) filter (where event_type in ('click', 'clicked')) as last_clicked_at
    from events_personed
    where person_id is not null
    group by person_id, campaign_key

),

final as (

    select
        {{ email_engagement_id('person_id', 'campaign_key') }} as email_engagement_id,
        person_id,
        campaign_key as campaign_id,
        first_event_at,
        last_event_at,
        cast(first_event_at as date) as first_event_date,
        events_count,
        is_sent,
        is_opened,
        is_clicked,
        is_bounced,
        is_unsubscribed,
        last_clicked_at
    from engagement

)

select * from final
