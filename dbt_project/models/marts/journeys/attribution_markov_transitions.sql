-- The first-order Markov chain over channel paths, as a table: how often a journey moved from one state to the
-- next, and the share of the moves out of a state that went to each next one. States are the channels,
-- '(start)', and the two ends '(conversion)' and '(null)'. A converting journey is a purchase's conversion path
-- (fct_conversion_paths). A journey that did not convert is a run of a person's touches on no conversion path,
-- split where two touches are more than var('attribution_lookback_days') days apart (the window in which a
-- touch can count for a purchase). attribution_markov_removal_effects solves the chain.

with

conversion_paths as (

    select * from {{ ref('fct_conversion_paths') }}

),

touchpoints as (

    select * from {{ ref('fct_touchpoints') }}

),

unconverted_touches as (

    select
        touchpoints.person_id,
        touchpoints.touchpoint_id,
        touchpoints.touched_at,
        touchpoints.channel,
        coalesce(
            date_diff(
                'second',
                lag(touchpoints.touched_at) over (
                    partition by touchpoints.person_id
                    order by touchpoints.touched_at asc, touchpoints.touchpoint_id asc
                ),
                touchpoints.touched_at
            ) > {{ var("attribution_lookback_days") }} * 86400,
            true
        ) as starts_journey
    from touchpoints
    anti join conversion_paths
        on touchpoints.touchpoint_id = conversion_paths.touchpoint_id

),

unconverted_steps as (

    select
        'null|' || person_id || '|' || cast(
            sum(cast(starts_journey as integer)) over (
                partition by person_id order by touched_at asc, touchpoint_id asc
            ) as varchar
        ) as journey_id,
        touchpoint_id,
        touched_at,
        channel,
        '(null)' as journey_end
    from unconverted_touches

),

converted_steps as (

    select
        'conversion|' || order_id as journey_id,
        touchpoint_id,
        touched_at,
        channel,
        '(conversion)' as journey_end
    from conversion_paths

),

steps as (

    select * from converted_steps
    union all
    select * from unconverted_steps

),

moves as (

    -- into every touch from the one before it (or from the start), and out of the last one to the journey's end
    select
        coalesce(
            lag(channel) over (partition by journey_id order by touched_at asc, touchpoint_id asc), '(start)'
        ) as from_state,
        channel as to_state
    from steps
    union all
    select
        arg_max(channel, (touched_at, touchpoint_id)) as from_state,
        any_value(journey_end) as to_state
    from steps
    group by journey_id

),

counted as (

    select
        from_state,
        to_state,
        count(*) as transitions_count
    from moves
    group by from_state, to_state

),

final as (

    select
        from_state || ' > ' || to_state as transition_id,
        from_state,
        to_state,
        transitions_count,
        sum(transitions_count) over (partition by from_state) as from_state_count,
        transitions_count / sum(transitions_count) over (partition by from_state) as transition_probability
    from counted

)

select * from final
