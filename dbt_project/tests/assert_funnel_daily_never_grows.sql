-- A funnel never grows: in every cell of funnel_daily (funnel, day, channel, device, segment), no step has more
-- sessions than the step before it. Rows returned are steps that do.

with

funnel_daily as (

    select * from {{ ref('funnel_daily') }}

)

select
    funnel_daily_id,
    sessions,
    sessions_previous_step
from funnel_daily
where sessions > sessions_previous_step
