-- One row per web session, attributed to the person most of its events are stitched to: every event type
-- counted, where the session came from (entry channel, campaign, landing page, device) and whether it
-- converted. Converted is defined here once (fct_abandoned_carts and the funnels read it): a purchase
-- (fct_orders.is_purchase) by the session's person from its start to var('conversion_window_hours') after its end.
--
-- Incremental (delete+insert on session_id): a daily run re-derives only the sessions whose row may have
-- changed (macro web_sessions_to_rederive, recorded for fct_funnel_steps), from all their events, and gives the
-- rebuild's rows
-- (tests/test_incremental_marts.py); grouping every event into sessions was 271 s of the 1M marts layer.
-- depends_on: {{ ref('person_id_history') }}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='session_id',
    pre_hook=[
        "{{ record_rederived_sessions() }}",
        "{{ web_sessions_out_of_date() }}",
        "{{ staged_out_of_view('started_at') }}",
    ],
    post_hook=[
        "{{ record_staged_batches(source('web', 'web_events')) }}",
        "{{ remember_lookup_purchases() }}",
    ],
) }}

with

web_events as (

    select * from {{ ref('stg_web__events') }}

),

node_persons as (

    -- an event's person is its identity node's (identity.person_map holds the same, one row per event)
    {{ node_persons(ref('int_identity_graph_resolved')) }}

),

purchases as (

    {{ lookup_purchases(['order_id', 'person_id', 'ordered_at']) }}

),

events_personed as (

    select
        web_events.*,
        -- an event without a session id is a session of its own
        {{ web_session_key('web_events.session_id', 'web_events.event_id') }} as session_key,
        node_persons.person_id
    from web_events
    left join node_persons
        on {{ record_node('web_events', 'web_events') }} = node_persons.node_id
    {%- if is_incremental() %}
        where {{ is_rederived_session(web_session_key('web_events.session_id', 'web_events.event_id')) }}
    {%- endif %}

),

per_person as (

    -- One pass over the events: partial aggregates per session and person (a session nearly always has one),
    -- combined per session below. Grouping the events twice, once for the session's person and once for the
    -- rest, took 146 s of a 1M full build; this takes 95 s for the same rows.
    select
        session_key,
        person_id,
        min(occurred_at) as started_at,
        max(occurred_at) as ended_at,
        count(*) as events_count,
        count(*) filter (where event_type = 'page_view') as page_views,
        count(*) filter (where event_type = 'product_view') as product_views,
        count(*) filter (where event_type = 'add_to_cart') as add_to_carts,
        count(*) filter (where event_type = 'checkout') as checkouts,
        count(*) filter (where event_type = 'purchase') as purchase_events,
        count(*) filter (where event_type = 'login') as logins,
        count(*) filter (
            where event_type not in ('page_view', 'product_view', 'add_to_cart', 'checkout', 'purchase', 'login')
        ) as other_events,
        list(product_id) filter (where event_type = 'add_to_cart') as cart_product_ids,
        bool_or(customer_id is not null) as is_logged_in,
        -- "first" is the earliest event, then the smallest event id: the same session always has the same entry
        arg_min(
            struct_pack(anonymous_id, device_type, channel, landing_url := page_url), (occurred_at, event_id)
        ) as entry,
        min((occurred_at, event_id)) as entry_key
    from events_personed
    group by session_key, person_id

),

sessions_personed as (

    select
        session_key,
        min(started_at) as started_at,
        max(ended_at) as ended_at,
        cast(sum(events_count) as bigint) as events_count,
        cast(sum(page_views) as bigint) as page_views,
        cast(sum(product_views) as bigint) as product_views,
        cast(sum(add_to_carts) as bigint) as add_to_carts,
        cast(sum(checkouts) as bigint) as checkouts,
        cast(sum(purchase_events) as bigint) as purchase_events,
        cast(sum(logins) as bigint) as logins,
        cast(sum(other_events) as bigint) as other_events,
        list_sort(flatten(list(cart_product_ids) filter (where cart_product_ids is not null))) as cart_product_ids,
        bool_or(is_logged_in) as is_logged_in,
        arg_min(entry, entry_key).anonymous_id as anonymous_id,
        arg_min(entry, entry_key).device_type as device_type,
        arg_min(entry, entry_key).channel as channel,
        arg_min(entry, entry_key).landing_url as landing_url,
        -- the person most of its events are stitched to; a tie goes to the smallest person_id, so reruns agree
        arg_min(person_id, (-events_count, person_id)) filter (where person_id is not null) as person_id
    from per_person
    group by session_key

),

conversions as (

    -- the person's first purchase at or after the session's start: one ordered lookup per person (asof join),
    -- not every session against every order
    select
        sessions_personed.session_key,
        purchases.order_id,
        purchases.ordered_at
    from sessions_personed
    asof inner join purchases
        on
            sessions_personed.person_id = purchases.person_id
            and sessions_personed.started_at <= purchases.ordered_at
    where purchases.ordered_at <= sessions_personed.ended_at + interval '{{ var("conversion_window_hours") }} hours'

),

final as (

    select
        sessions_personed.session_key as session_id,
        sessions_personed.person_id,
        sessions_personed.anonymous_id,
        sessions_personed.started_at,
        sessions_personed.ended_at,
        cast(sessions_personed.started_at as date) as session_date,
        date_diff('second', sessions_personed.started_at, sessions_personed.ended_at) as duration_seconds,
        sessions_personed.events_count,
        sessions_personed.page_views,
        sessions_personed.product_views,
        sessions_personed.is_logged_in,
        sessions_personed.device_type,
        sessions_personed.channel,
        sessions_personed.add_to_carts,
        sessions_personed.checkouts,
        sessions_personed.purchase_events,
        sessions_personed.logins,
        sessions_personed.other_events,
        sessions_personed.cart_product_ids,
        {{ utm_campaign('sessions_personed.landing_url') }} as campaign,
        {{ url_page('sessions_personed.landing_url') }} as landing_page,
        conversions.order_id is not null as is_converted,
        conversions.order_id as converted_order_id,
        conversions.ordered_at as converted_at
    from sessions_personed
    left join conversions
        on sessions_personed.session_key = conversions.session_key

)

select * from final
