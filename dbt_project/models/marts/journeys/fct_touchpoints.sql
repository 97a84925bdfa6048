-- One row per marketing touch attributed to a person, up to var('as_of'): a web session (its entry channel
-- and campaign), an email click (channel 'email', the email's campaign) and a store visit (a POS transaction,
-- channel 'store'). Touches of nobody known (a device never linked to a person) cannot be on anyone's path
-- and are left out.

with

web_sessions as (

    select * from {{ ref('fct_web_sessions') }}
    where person_id is not null

),

email_clicks as (

    select * from {{ ref('stg_email__events') }}
    where event_type in ('click', 'clicked')

),

node_persons as (

    -- a click's person is its identity node's (identity.person_map holds the same, one row per event)
    {{ node_persons(ref('int_identity_graph_resolved')) }}

),

store_visits as (

    select * from {{ ref('fct_orders') }}
    where channel = 'store' and person_id is not null

),

session_touches as (

    select
        'web_session:' || session_id as touchpoint_id,
        person_id,
        'web_session' as touch_type,
        started_at as touched_at,
        coalesce(channel, 'unknown') as channel,
        campaign,
        device_type,
        landing_page,
        session_id as source_record_id
    from web_sessions

),

click_touches as (

    select
        'email_click:' || email_clicks.event_id as touchpoint_id,
        node_persons.person_id,
        'email_click' as touch_type,
        email_clicks.occurred_at as touched_at,
        'email' as channel,
        email_clicks.campaign_id as campaign,
        cast(null as varchar) as device_type,
        cast(null as varchar) as landing_page,
        email_clicks.event_id as source_record_id
    from email_clicks
    inner join node_persons
        on {{ record_node('email_events', 'email_clicks') }} = node_persons.node_id
    where node_persons.person_id is not null

),

visit_touches as (

    select
        'pos_visit:' || source_record_id as touchpoint_id,
        person_id,
        'pos_visit' as touch_type,
        ordered_at as touched_at,
        'store' as channel,
        cast(null as varchar) as campaign,
        cast(null as varchar) as device_type,
        cast(null as varchar) as landing_page,
        source_record_id
    from store_visits

),

unioned as (

    select * from session_touches
    union all
    select * from click_touches
    union all
    select * from visit_touches

),

final as (

    select
        touchpoint_id,
        person_id,
        touch_type,
        touched_at,
        cast(touched_at as date) as touch_date,
        channel,
        campaign,
        device_type,
        landing_page,
        source_record_id
    from unioned

)

select * from final
