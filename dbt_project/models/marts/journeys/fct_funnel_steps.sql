-- One row per funnel (seed funnel_steps), web session and step the session reached, with when. A session
-- reaches step 1 at its first event matching the step, and step n + 1 at its first matching event after the
-- one that reached step n, so steps are reached in their order and a session at step n + 1 is at step n. An
-- event matches a step of the seed when it is of the step's event_type and, if the step has a page_url_like,
-- its page_url is like it; event_type '(purchase)' is the session's conversion (fct_web_sessions.is_converted,
-- at converted_at). A funnel is seed rows only: this model never names one.
--
-- Incremental: a daily run re-derives the sessions fct_web_sessions re-derived in the same invocation (every
-- session when the seed changed), after a pre-hook deleted their rows (macros/incremental.sql).
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ funnel_steps_out_of_date() }}",
    post_hook="{{ remember_funnel_definition() }}",
) }}

with recursive

funnel_steps as (

    select
        funnel_name,
        step_number,
        step_name,
        event_type,
        page_url_like,
        -- the step's rank in its funnel, so step numbers need not be consecutive
        row_number() over (partition by funnel_name order by step_number) as step_rank
    from {{ ref('funnel_steps') }}

),

web_sessions as (

    select * from {{ ref('fct_web_sessions') }}

),

web_events as (

    select
        {{ web_session_key() }} as session_id,
        event_id,
        occurred_at,
        event_type,
        page_url,
        0 as kind
    from {{ ref('stg_web__events') }}
    {%- if is_incremental() %}
        where {{ is_rederived_funnel_session(web_session_key()) }}
    {%- endif %}

),

conversion_events as (

    -- after every web event at the same instant: a purchase ends what led to it
    select
        session_id,
        'conversion:' || converted_order_id as event_id,
        converted_at as occurred_at,
        '(purchase)' as event_type,
        cast(null as varchar) as page_url,
        1 as kind
    from web_sessions
    where
        is_converted
        {%- if is_incremental() %}
            and {{ is_rederived_funnel_session('session_id') }}
        {%- endif %}

),

events as (

    select * from web_events
    union all
    select * from conversion_events

),

step_events as (

    -- every event matching a step, with its place in the session: by time, web events before the conversion
    -- at the same instant, then by event id (an event matching steps of several funnels has one place)
    select
        funnel_steps.funnel_name,
        funnel_steps.step_rank,
        events.session_id,
        events.occurred_at,
        dense_rank() over (
            partition by events.session_id
            order by events.occurred_at asc, events.kind asc, events.event_id asc
        ) as event_seq
    from events
    inner join funnel_steps
        on
            events.event_type = funnel_steps.event_type
            and (funnel_steps.page_url_like is null or events.page_url like funnel_steps.page_url_like)

),

reached (funnel_name, step_rank, session_id, event_seq, reached_at) as (

    select
        funnel_name,
        step_rank,
        session_id,
        min(event_seq) as event_seq,
        arg_min(occurred_at, event_seq) as reached_at
    from step_events
    where step_rank = 1
    group by funnel_name, step_rank, session_id
    union all
    select
        step_events.funnel_name,
        step_events.step_rank,
        step_events.session_id,
        min(step_events.event_seq) as event_seq,
        arg_min(step_events.occurred_at, step_events.event_seq) as reached_at
    from reached
    inner join step_events
        on
            reached.funnel_name = step_events.funnel_name
            and reached.session_id = step_events.session_id
            and reached.step_rank + 1 = step_events.step_rank
            and reached.event_seq < step_events.event_seq
    group by step_events.funnel_name, step_events.step_rank, step_events.session_id

),

final as (

    select
        {{ composite_id(['reached.funnel_name', 'reached.session_id', 'funnel_steps.step_number']) }}
            as funnel_step_id,
        reached.funnel_name,
        funnel_steps.step_number,
        funnel_steps.step_name,
        reached.session_id,
        web_sessions.person_id,
        web_sessions.session_date,
        web_sessions.channel,
        web_sessions.device_type,
        reached.reached_at,
        date_diff(
            'second',
            lag(reached.reached_at) over (
                partition by reached.funnel_name, reached.session_id order by reached.step_rank
            ),
            reached.reached_at
        ) as seconds_from_previous_step,
        date_diff(
            'second',
            first_value(reached.reached_at) over (
                partition by reached.funnel_name, reached.session_id order by reached.step_rank
            ),
            reached.reached_at
        ) as seconds_from_first_step
    from reached
    inner join funnel_steps
        on
            reached.funnel_name = funnel_steps.funnel_name
            and reached.step_rank = funnel_steps.step_rank
    inner join web_sessions
        on reached.session_id = web_sessions.session_id

)

select * from final
