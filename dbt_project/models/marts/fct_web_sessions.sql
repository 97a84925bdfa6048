-- One row per web session, attributed to the person most of its events are stitched to.

with

web_events as (

    select * from {{ ref('stg_web__events') }}

),

person_map as (

    select * from {{ ref('person_map') }}
    where source_entity = 'web_events'

),

events_personed as (

    select
        web_events.*,
        -- an event without a session id is a session of its own
        coalesce(web_events.session_id, 'event:' || web_events.event_id) as session_key,
        person_map.person_id
    from web_events
    left join person_map
        on web_events.event_id = person_map.source_record_id

),

session_persons as (

    -- ties between persons within one session go to the smallest person_id, so reruns agree
    select
        session_key,
        person_id
    from events_personed
    where person_id is not null
    group by session_key, person_id
    qualify row_number() over (partition by session_key order by count(*) desc, person_id) = 1

),

sessions as (

    select
        session_key,
        min(occurred_at) as started_at,
        max(occurred_at) as ended_at,
        count(*) as events_count,
        count(*) filter (where event_type = 'page_view') as page_views,
        count(*) filter (where event_type = 'product_view') as product_views,
        bool_or(customer_id is not null) as is_logged_in,
        arg_min(anonymous_id, occurred_at) as anonymous_id,
        arg_min(device_type, occurred_at) as device_type,
        arg_min(channel, occurred_at) as channel
    from events_personed
    group by session_key

),

final as (

    select
        sessions.session_key as session_id,
        session_persons.person_id,
        sessions.anonymous_id,
        sessions.started_at,
        sessions.ended_at,
        cast(sessions.started_at as date) as session_date,
        date_diff('second', sessions.started_at, sessions.ended_at) as duration_seconds,
        sessions.events_count,
        sessions.page_views,
        sessions.product_views,
        sessions.is_logged_in,
        sessions.device_type,
        sessions.channel
    from sessions
    left join session_persons
        on sessions.session_key = session_persons.session_key

)

select * from final
