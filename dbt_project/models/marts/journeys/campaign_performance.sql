-- One row per email campaign: how many recipients it was sent to, opened, clicked, bounced and unsubscribed
-- (fct_email_engagement), and the purchases and revenue attributed to it. Rule: a purchase is the campaign's when
-- the last email click on its conversion path (fct_conversion_paths: touches since the previous purchase, within
-- var('attribution_lookback_days') days) is on the campaign, whatever other touches came after the click.

with

engagement as (

    select * from {{ ref('fct_email_engagement') }}

),

conversion_paths as (

    select * from {{ ref('fct_conversion_paths') }}

),

last_email_clicks as (

    select
        order_id,
        arg_max(coalesce(campaign, '(none)'), touch_position) as campaign_id,
        any_value(conversion_value) as conversion_value
    from conversion_paths
    where touch_type = 'email_click'
    group by order_id

),

attributed as (

    select
        campaign_id,
        count(*) as attributed_orders,
        sum(conversion_value) as attributed_revenue
    from last_email_clicks
    group by campaign_id

),

campaigns as (

    select
        campaign_id,
        min(first_event_at) as first_event_at,
        count(*) filter (where is_sent) as sends,
        count(*) filter (where is_opened) as opens,
        count(*) filter (where is_clicked) as clicks,
        count(*) filter (where is_bounced) as bounces,
        count(*) filter (where is_unsubscribed) as unsubscribes
    from engagement
    group by campaign_id

),

final as (

    select
        campaigns.campaign_id,
        campaigns.first_event_at,
        cast(campaigns.first_event_at as date) as first_event_date,
        campaigns.sends,
        campaigns.opens,
        campaigns.clicks,
        campaigns.bounces,
        campaigns.unsubscribes,
        round(campaigns.opens / nullif(campaigns.sends, 0), 4) as open_rate,
        round(campaigns.clicks / nullif(campaigns.sends, 0), 4) as click_rate,
        round(campaigns.clicks / nullif(campaigns.opens, 0), 4) as click_to_open_rate,
        round(campaigns.unsubscribes / nullif(campaigns.sends, 0), 4) as unsubscribe_rate,
        coalesce(attributed.attributed_orders, 0) as attributed_orders,
        cast(coalesce(attributed.attributed_revenue, 0) as decimal(18, 2)) as attributed_revenue,
        round(coalesce(attributed.attributed_orders, 0) / nullif(campaigns.clicks, 0), 4) as orders_per_click
    from campaigns
    left join attributed
        on campaigns.campaign_id = attributed.campaign_id

)

select * from final
