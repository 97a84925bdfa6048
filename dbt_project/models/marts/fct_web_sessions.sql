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

web_events as not materialized (

    select * from {{ ref('stg_web__events') }}

),

node_persons as (

    -- an event's person is its identity node's (identity.person_map holds the same, one row per event)
    {{ node_persons(ref('int_identity_graph_resolved')) }}

),

purchases as (

    {{ lookup_purchases(['order_id', 'person_id', 'ordered_at']) }}

),

events_keyed as not materialized (

    -- read by the groupings below: inlined into each (not written out whole: 42M events at 1M customers)
    select
        web_events.*,
        -- an event without a session id is a session of its own
        {{ web_session_key('web_events.session_id', 'web_events.event_id') }} as session_key,
        {{ record_node('web_events', 'web_events') }} as node_id
    from web_events
    {%- if is_incremental() %}
        where {{ is_rederived_session(web_session_key('web_events.session_id', 'web_events.event_id')) }}
    {%- endif %}

),

session_nodes as (

    -- the session's events per identity node (one or two: the browser, the customer once logged in), so only
    -- these rows meet the node persons, not every event
    select
        session_key,
        node_id,
        count(*) as events_count
    from events_keyed
    group by session_key, node_id

),

session_person_events as (

    -- how many of the session's events each person holds
    select
        session_nodes.session_key,
        node_persons.person_id,
        sum(session_nodes.events_count) as events_count
    from session_nodes
    inner join node_persons
        on session_nodes.node_id = node_persons.node_id
    group by session_nodes.session_key, node_persons.person_id

),

session_persons as materialized (

    -- the person most of its events are stitched to; a tie goes to the smallest person_id, so reruns agree
    select
        session_key,
        arg_min(person_id, (-events_count, person_id)) as person_id
    from session_person_events
    group by session_key

),

sessions_counted as materialized (

    -- Materialized CTEs run first, one at a time: this grouping (one group per session, 9.5M at 1M customers)
    -- gets the memory to itself instead of sharing it with the joins below, and spills less. The entry is the
    -- least (occurred_at, event_id, ...) tuple: the earliest event, then the smallest event id, carrying its
    -- attributes. On a 1M-size copy of the inputs the query took a median 161 s as one grouping with the persons
    -- and the cart lists in it, 92 s split like this (docs/data_engineers.md, "fct_web_sessions at 1M").
    select
        session_key,
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
        bool_or(customer_id is not null) as is_logged_in,
        -- an unnamed row, read by position below: with struct_pack's names the query took 120-149 s on the
        -- copy, with the row 82-121 s (bench/results/L-2026-12-07-twelfth.md)
        min((occurred_at, event_id, anonymous_id, device_type, channel, page_url)) as entry
    from events_keyed
    group by session_key

),

session_carts as (

    -- the products put in the cart, from the add-to-cart events only (a list per session in the grouping above
    -- made it spill)
    select
        session_key,
        list_sort(list(product_id)) as cart_product_ids
    from events_keyed
    where event_type = 'add_to_cart'
    group by session_key

),

sessions_personed as (

    select
        sessions_counted.session_key,
        sessions_counted.started_at,
        sessions_counted.ended_at,
        sessions_counted.events_count,
        sessions_counted.page_views,
        sessions_counted.product_views,
        sessions_counted.add_to_carts,
        sessions_counted.checkouts,
        sessions_counted.purchase_events,
        sessions_counted.logins,
        sessions_counted.other_events,
        sessions_counted.is_logged_in,
        session_carts.cart_product_ids,
        sessions_counted.entry[3] as anonymous_id,
        sessions_counted.entry[4] as device_type,
        sessions_counted.entry[5] as channel,
        sessions_counted.entry[6] as landing_url,
        session_persons.person_id
    from sessions_counted
    left join session_carts
        on sessions_counted.session_key = session_carts.session_key
    left join session_persons
        on sessions_counted.session_key = session_persons.session_key

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
