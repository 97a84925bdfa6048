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

credit_per_model as (

    select
        models.attribution_model,
        credits.channel,
        credits.order_id,
        credits.conversion_value,
        case models.attribution_model
            when 'first_touch' then credits.first_touch_credit
            when 'last_touch' then credits.last_touch_credit
            when 'linear' then credits.linear_credit
            when 'time_decay' then credits.time_decay_credit
            when 'position_based' then credits.position_based_credit
            when 'markov' then credits.markov_credit
        end as credit
    from credits
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
        count(distinct order_id) as conversions_touched,
        sum(credit) as attributed_conversions,
        sum(credit * conversion_value) as attributed_revenue
    from credit_per_model
    group by attribution_model, channel
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
