-- One row per person of identity.persons: profile, orders, preferences, web and email activity,
-- consent and RFM, as of var('as_of').

with

persons as (

    select * from {{ ref('persons') }}

),

orders as (

    select * from {{ ref('fct_orders') }}

),

order_items as (

    select * from {{ ref('stg_shop__order_items') }}

),

products as (

    select * from {{ ref('stg_shop__products') }}

),

customer_rfm as (

    select * from {{ ref('customer_rfm') }}

),

web_sessions as (

    select * from {{ ref('fct_web_sessions') }}

),

email_engagement as (

    select * from {{ ref('fct_email_engagement') }}

),

consents as (

    select * from {{ ref('dim_consents') }}
    where purpose = 'email_marketing'

),

order_totals as (

    select
        person_id,
        min(order_date) filter (where is_purchase) as first_order_date,
        max(order_date) filter (where is_purchase) as last_order_date,
        count(*) filter (where is_purchase) as orders_count,
        cast(sum(net_amount) as decimal(18, 2)) as revenue
    from orders
    where person_id is not null
    group by person_id

),

preferred_channels as (

    -- most purchases, then most spent, then name: deterministic
    select
        person_id,
        channel as preferred_channel
    from orders
    where person_id is not null and is_purchase
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
        and orders.person_id is not null
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
        max(ended_at) as last_visit_at
    from web_sessions
    where person_id is not null
    group by person_id

),

email_activity as (

    select
        person_id,
        count(*) filter (where is_sent) as campaigns_sent,
        count(*) filter (where is_opened) as campaigns_opened,
        count(*) filter (where is_clicked) as campaigns_clicked
    from email_engagement
    group by person_id

),

final as (

    select
        persons.person_id,
        persons.email,
        persons.phone_e164,
        persons.first_name,
        persons.last_name,
        persons.country,
        persons.is_known,
        order_totals.first_order_date,
        order_totals.last_order_date,
        coalesce(order_totals.orders_count, 0) as orders_count,
        coalesce(order_totals.revenue, 0) as revenue,
        case
            when order_totals.orders_count > 0
                then {{ money_per('order_totals.revenue', 'order_totals.orders_count') }}
        end as avg_order_value,
        preferred_channels.preferred_channel,
        preferred_categories.preferred_category,
        coalesce(web_activity.web_sessions, 0) as web_sessions,
        web_activity.last_visit_at,
        case
            when email_activity.campaigns_sent > 0
                then round(email_activity.campaigns_opened / email_activity.campaigns_sent, 4)
        end as email_open_rate,
        case
            when email_activity.campaigns_sent > 0
                then round(email_activity.campaigns_clicked / email_activity.campaigns_sent, 4)
        end as email_click_rate,
        coalesce(consents.is_granted, false) as has_email_consent,
        customer_rfm.recency_days,
        customer_rfm.frequency,
        customer_rfm.monetary,
        customer_rfm.r_score,
        customer_rfm.f_score,
        customer_rfm.m_score,
        customer_rfm.rfm_segment,
        cast('{{ var("as_of") }}' as date) as as_of
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
    left join consents
        on persons.person_id = consents.person_id
    left join customer_rfm
        on persons.person_id = customer_rfm.person_id

)

select * from final
