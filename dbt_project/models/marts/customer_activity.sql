-- One row per person of identity.persons: what they did up to var('as_of'), in total and in the 30/90/365
-- days ending on it: purchases, revenue, preferred channel and category, web sessions, email engagement.
-- No personal data, consent, RFM or ML: the ML stage reads its features here (customer_360, which adds
-- those, is built after the ML stage from this table).

with

persons as (

    select * from {{ ref('persons') }}

),

orders as (

    select * from {{ ref('fct_orders') }}
    where person_id is not null

),

order_items as (

    select * from {{ ref('stg_shop__order_items') }}

),

products as (

    select * from {{ ref('stg_shop__products') }}

),

web_sessions as (

    select * from {{ ref('fct_web_sessions') }}
    where person_id is not null

),

email_engagement as (

    select * from {{ ref('fct_email_engagement') }}

),

order_totals as (

    -- purchases are fct_orders.is_purchase; revenue is the net value of every order (refunds net to 0,
    -- returns subtract), as customer_rfm's monetary
    select
        person_id,
        min(order_date) filter (where is_purchase) as first_order_date,
        max(order_date) filter (where is_purchase) as last_order_date,
        count(*) filter (where is_purchase) as orders_count,
        count(*) filter (where is_purchase and {{ in_last_days('order_date', 30) }}) as orders_30d,
        count(*) filter (where is_purchase and {{ in_last_days('order_date', 90) }}) as orders_90d,
        count(*) filter (where is_purchase and {{ in_last_days('order_date', 365) }}) as orders_365d,
        cast(sum(net_amount) as decimal(18, 2)) as revenue,
        cast(sum(net_amount) filter (where {{ in_last_days('order_date', 30) }}) as decimal(18, 2)) as revenue_30d,
        cast(sum(net_amount) filter (where {{ in_last_days('order_date', 90) }}) as decimal(18, 2)) as revenue_90d,
        cast(sum(net_amount) filter (where {{ in_last_days('order_date', 365) }}) as decimal(18, 2)) as revenue_365d
    from orders
    group by person_id

),

preferred_channels as (

    -- most purchases, then most spent, then name: deterministic
    select
        person_id,
        channel as preferred_channel
    from orders
    where is_purchase
    group by person_id, channel
    qualify row_number() over (
        partition by person_id order by count(*) desc, sum(net_amount) desc, channel
    ) = 1

),

preferred_categories as (

    -- the category with the most spent on the lines of online purchases (fct_orders.is_purchase)
    select
        orders.person_id,
        products.category as preferred_category
    from orders
    inner join order_items
        on orders.source_record_id = order_items.order_id
    inner join products
        on order_items.product_id = products.product_id
    where
        orders.channel = 'online'
        and orders.is_purchase
        and products.category is not null
    group by orders.person_id, products.category
    qualify row_number() over (
        partition by orders.person_id order by sum(order_items.line_amount) desc, products.category
    ) = 1

),

web_activity as (

    select
        person_id,
        count(*) as web_sessions,
        count(*) filter (where {{ in_last_days('session_date', 30) }}) as web_sessions_30d,
        count(*) filter (where {{ in_last_days('session_date', 90) }}) as web_sessions_90d,
        count(*) filter (where {{ in_last_days('session_date', 365) }}) as web_sessions_365d,
        max(ended_at) as last_visit_at
    from web_sessions
    group by person_id

),

email_activity as (

    -- a campaign is clicked in a window when its last click is: every click is on or before as_of
    select
        person_id,
        count(*) filter (where is_sent) as campaigns_sent,
        count(*) filter (where is_opened) as campaigns_opened,
        count(*) filter (where is_clicked) as campaigns_clicked,
        count(*) filter (where {{ in_last_days('cast(last_clicked_at as date)', 30) }}) as email_clicks_30d,
        count(*) filter (where {{ in_last_days('cast(last_clicked_at as date)', 90) }}) as email_clicks_90d,
        count(*) filter (where {{ in_last_days('cast(last_clicked_at as date)', 365) }}) as email_clicks_365d
    from email_engagement
    group by person_id

),

final as (

    select
        persons.person_id,
        order_totals.first_order_date,
        order_totals.last_order_date,
        coalesce(order_totals.orders_count, 0) as orders_count,
        coalesce(order_totals.orders_30d, 0) as orders_30d,
        coalesce(order_totals.orders_90d, 0) as orders_90d,
        coalesce(order_totals.orders_365d, 0) as orders_365d,
        coalesce(order_totals.revenue, 0) as revenue,
        coalesce(order_totals.revenue_30d, 0) as revenue_30d,
        coalesce(order_totals.revenue_90d, 0) as revenue_90d,
        coalesce(order_totals.revenue_365d, 0) as revenue_365d,
        case
            when order_totals.orders_count > 0
                then {{ money_per('order_totals.revenue', 'order_totals.orders_count') }}
        end as avg_order_value,
        preferred_channels.preferred_channel,
        preferred_categories.preferred_category,
        coalesce(web_activity.web_sessions, 0) as web_sessions,
        coalesce(web_activity.web_sessions_30d, 0) as web_sessions_30d,
        coalesce(web_activity.web_sessions_90d, 0) as web_sessions_90d,
        coalesce(web_activity.web_sessions_365d, 0) as web_sessions_365d,
        web_activity.last_visit_at,
        case
            when email_activity.campaigns_sent > 0
                then round(email_activity.campaigns_opened / email_activity.campaigns_sent, 4)
        end as email_open_rate,
        case
            when email_activity.campaigns_sent > 0
                then round(email_activity.campaigns_clicked / email_activity.campaigns_sent, 4)
        end as email_click_rate,
        coalesce(email_activity.email_clicks_30d, 0) as email_clicks_30d,
        coalesce(email_activity.email_clicks_90d, 0) as email_clicks_90d,
        coalesce(email_activity.email_clicks_365d, 0) as email_clicks_365d,
        cast('{{ as_of() }}' as date) as as_of
    from persons
    left join order_totals
        on persons.person_id = order_totals.person_id
    left join preferred_channels
        on persons.person_id = preferred_channels.person_id
    left join preferred_categories
        on persons.person_id = preferred_categories.person_id
    left join web_activity
        on persons.person_id = web_activity.person_id
    left join email_activity
        on persons.person_id = email_activity.person_id

)

select * from final
