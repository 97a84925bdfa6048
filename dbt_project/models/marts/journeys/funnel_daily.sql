-- Per funnel (seed funnel_steps), day, entry channel, device and RFM segment: how many sessions reached each
-- step, the conversion and drop-off rates from the step before and from the first step, and the median time
-- from the step before. A cell exists for every step of a funnel wherever some session reached its first step
-- (a step nobody reached counts 0). Medians are per cell: for other groupings, take them from fct_funnel_steps.

with

funnel_steps as (

    select * from {{ ref('funnel_steps') }}

),

steps_reached as (

    select * from {{ ref('fct_funnel_steps') }}

),

customer_rfm as (

    select * from {{ ref('customer_rfm') }}

),

first_steps as (

    select
        funnel_name,
        min(step_number) as first_step_number
    from funnel_steps
    group by funnel_name

),

reached_segmented as (

    -- the person's RFM segment as of var('as_of') (not as of the session); 'unknown' without a person or a purchase
    select
        steps_reached.funnel_name,
        steps_reached.step_number,
        steps_reached.session_date,
        coalesce(steps_reached.channel, 'unknown') as channel,
        coalesce(steps_reached.device_type, 'unknown') as device_type,
        coalesce(customer_rfm.rfm_segment, 'unknown') as rfm_segment,
        steps_reached.seconds_from_previous_step
    from steps_reached
    left join customer_rfm
        on steps_reached.person_id = customer_rfm.person_id

),

counted as (

    select
        funnel_name,
        step_number,
        session_date,
        channel,
        device_type,
        rfm_segment,
        count(*) as sessions,
        median(seconds_from_previous_step) as median_seconds_from_previous_step
    from reached_segmented
    group by funnel_name, step_number, session_date, channel, device_type, rfm_segment

),

cells as (

    select distinct
        counted.funnel_name,
        counted.session_date,
        counted.channel,
        counted.device_type,
        counted.rfm_segment
    from counted
    inner join first_steps
        on
            counted.funnel_name = first_steps.funnel_name
            and counted.step_number = first_steps.first_step_number

),

grid as (

    select
        cells.*,
        funnel_steps.step_number,
        funnel_steps.step_name,
        coalesce(counted.sessions, 0) as sessions,
        counted.median_seconds_from_previous_step
    from cells
    inner join funnel_steps
        on cells.funnel_name = funnel_steps.funnel_name
    left join counted
        on
            cells.funnel_name = counted.funnel_name
            and cells.session_date = counted.session_date
            and cells.channel = counted.channel
            and cells.device_type = counted.device_type
            and cells.rfm_segment = counted.rfm_segment
            and funnel_steps.step_number = counted.step_number

),

compared as (

    select
        *,
        first_value(sessions) over cell_steps as sessions_first_step,
        lag(sessions) over cell_steps as sessions_previous_step
    from grid
    window cell_steps as (
        partition by funnel_name, session_date, channel, device_type, rfm_segment order by step_number
    )

),

final as (

    select
        {{ composite_id(
            ['funnel_name', "strftime(session_date, '%Y-%m-%d')", 'channel', 'device_type', 'rfm_segment',
             'step_number']
        ) }} as funnel_daily_id,
        funnel_name,
        session_date,
        channel,
        device_type,
        rfm_segment,
        step_number,
        step_name,
        sessions,
        sessions_previous_step,
        sessions_first_step,
        round(sessions / nullif(sessions_previous_step, 0), 4) as conversion_rate_from_previous_step,
        round(1 - sessions / nullif(sessions_previous_step, 0), 4) as drop_off_rate,
        round(sessions / sessions_first_step, 4) as conversion_rate_from_first_step,
        median_seconds_from_previous_step
    from compared

)

select * from final
