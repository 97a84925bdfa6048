-- The credit each touch of a conversion path (fct_conversion_paths) gets under six attribution models; under
-- every model the credits of one conversion sum to 1. Rules (the yml has the full description):
-- first touch, last touch, linear (1/n), time decay (weight 0.5 ^ (age / var('attribution_half_life_days'))),
-- position-based (40% first, 40% last, 20% spread over the middle; 50/50 with two touches) and Markov (the
-- conversion split among the path's channels by their removal effect, attribution_markov_removal_effects).

with

conversion_paths as (

    select * from {{ ref('fct_conversion_paths') }}

),

removal_effects as (

    select * from {{ ref('attribution_markov_removal_effects') }}

),

weighted as (

    select
        conversion_paths.*,
        pow(0.5, conversion_paths.seconds_to_conversion / (86400.0 * {{ var("attribution_half_life_days") }}))
            as decay_weight,
        -- a channel's removal effect shared among its touches on the path, so the path's channels (not its
        -- touches) split the conversion
        coalesce(removal_effects.removal_effect, 0)
        / count(*) over (partition by conversion_paths.order_id, conversion_paths.channel) as markov_weight
    from conversion_paths
    left join removal_effects
        on conversion_paths.channel = removal_effects.channel

),

totals as (

    select
        *,
        sum(decay_weight) over (partition by order_id) as decay_total,
        sum(markov_weight) over (partition by order_id) as markov_total
    from weighted

),

final as (

    select
        conversion_path_id as attribution_id,
        order_id,
        person_id,
        touchpoint_id,
        touch_type,
        channel,
        campaign,
        touched_at,
        ordered_at,
        order_date,
        touch_position,
        touches_count,
        conversion_value,
        cast(is_first_touch as double) as first_touch_credit,
        cast(is_last_touch as double) as last_touch_credit,
        1.0 / touches_count as linear_credit,
        decay_weight / decay_total as time_decay_credit,
        case
            when touches_count = 1 then 1.0
            when touches_count = 2 then 0.5
            when is_first_touch or is_last_touch then 0.4
            else 0.2 / (touches_count - 2)
        end as position_based_credit,
        -- a path whose channels all have a removal effect of 0 (none ever converted elsewhere) is split linearly
        case
            when markov_total > 0 then markov_weight / markov_total
            else 1.0 / touches_count
        end as markov_credit
    from totals

)

select * from final
