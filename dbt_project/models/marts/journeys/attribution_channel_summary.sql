-- Per attribution model and channel: touches, the conversions and revenue the model credits to the channel,
-- and their shares. Conversions with no touch in the lookback are the row '(no touch)', so each model's
-- conversions and revenue add up to every purchase (fct_orders.is_purchase) and its shares to 1.

with

credits as (

    select * from {{ ref('attribution_conversions') }}

),

touchpoints as (

    select * from {{ ref('fct_touchpoints') }}

),

purchases as (

    select * from {{ ref('fct_orders') }}
    where is_purchase and person_id is not null

),

models as (

    -- one per credit column of attribution_conversions
    select attribution_models.attribution_model
    from (
        values ('first_touch'), ('last_touch'), ('linear'), ('time_decay'), ('position_based'), ('markov')
    ) as attribution_models (attribution_model)

),

channel_sums as (

    -- one pass over the credits for every model (not one per model over a cross join): the credited conversions
    -- and revenue per channel under each model's credit column
    select
        channel,
        count(distinct order_id) as conversions_touched,
        sum(first_touch_credit) as first_touch_conversions,
        sum(first_touch_credit * conversion_value) as first_touch_revenue,
        sum(last_touch_credit) as last_touch_conversions,
        sum(last_touch_credit * conversion_value) as last_touch_revenue,
        sum(linear_credit) as linear_conversions,
        sum(linear_credit * conversion_value) as linear_revenue,
        sum(time_decay_credit) as time_decay_conversions,
        sum(time_decay_credit * conversion_value) as time_decay_revenue,
        sum(position_based_credit) as position_based_conversions,
        sum(position_based_credit * conversion_value) as position_based_revenue,
        sum(markov_credit) as markov_conversions,
        sum(markov_credit * conversion_value) as markov_revenue
    from credits
    group by channel

),

credit_per_model as (

    select
        models.attribution_model,
        channel_sums.channel,
        channel_sums.conversions_touched,
        case models.attribution_model
            when 'first_touch' then channel_sums.first_touch_conversions
            when 'last_touch' then channel_sums.last_touch_conversions
            when 'linear' then channel_sums.linear_conversions
            when 'time_decay' then channel_sums.time_decay_conversions
            when 'position_based' then channel_sums.position_based_conversions
            when 'markov' then channel_sums.markov_conversions
        end as attributed_conversions,
        case models.attribution_model
            when 'first_touch' then channel_sums.first_touch_revenue
            when 'last_touch' then channel_sums.last_touch_revenue
            when 'linear' then channel_sums.linear_revenue
            when 'time_decay' then channel_sums.time_decay_revenue
            when 'position_based' then channel_sums.position_based_revenue
            when 'markov' then channel_sums.markov_revenue
        end as attributed_revenue
    from channel_sums
    cross join models

),

untouched as (

    select
        count(*) as conversions,
        coalesce(sum(purchases.net_amount), 0) as revenue
    from purchases
    anti join credits
        on purchases.order_id = credits.order_id

),

channel_credits as (

    select
        attribution_model,
        channel,
        conversions_touched,
        attributed_conversions,
        attributed_revenue
    from credit_per_model
    union all
    select
        models.attribution_model,
        '(no touch)' as channel,
        untouched.conversions as conversions_touched,
        untouched.conversions as attributed_conversions,
        untouched.revenue as attributed_revenue
    from models
    cross join untouched
    where untouched.conversions > 0

),

channel_touches as (

    select
        channel,
        count(*) as touches
    from touchpoints
    group by channel

),

final as (

    select
        channel_credits.attribution_model || ':' || channel_credits.channel as attribution_summary_id,
        channel_credits.attribution_model,
        channel_credits.channel,
        coalesce(channel_touches.touches, 0) as touches,
        channel_credits.conversions_touched,
        channel_credits.attributed_conversions,
        cast(channel_credits.attributed_revenue as decimal(18, 2)) as attributed_revenue,
        channel_credits.attributed_conversions
        / sum(channel_credits.attributed_conversions) over (partition by channel_credits.attribution_model)
            as conversion_share,
        channel_credits.attributed_revenue / nullif(
            sum(channel_credits.attributed_revenue) over (partition by channel_credits.attribution_model), 0
        ) as revenue_share,
        channel_credits.attributed_conversions / nullif(channel_touches.touches, 0) as conversions_per_touch
    from channel_credits
    left join channel_touches
        on channel_credits.channel = channel_touches.channel

)

select * from final
