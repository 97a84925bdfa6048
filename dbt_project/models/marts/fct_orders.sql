-- Online orders and store (POS) transactions in one fact, attributed to a person through identity.person_map.
-- Rebuilt as a table each run rather than incrementally: re-stitching can move any past order to another
-- person, and DuckDB rebuilds millions of orders in seconds (bench/marts.py).

with

shop_orders as (

    select * from {{ ref('stg_shop__orders') }}

),

pos_transactions as (

    select * from {{ ref('stg_pos__transactions') }}

),

person_map as (

    select * from {{ ref('person_map') }}
    where source_entity in ('shop_orders', 'pos_transactions')

),

online_orders as (

    select
        'shop:' || order_id as order_id,
        'shop_orders' as source_entity,
        order_id as source_record_id,
        customer_id,
        'online' as channel,
        ordered_at,
        order_date,
        status,
        currency,
        gross_amount,
        net_amount,
        is_cancelled,
        is_refunded,
        false as is_return
    from shop_orders

),

store_orders as (

    select
        'pos:' || transaction_id as order_id,
        'pos_transactions' as source_entity,
        transaction_id as source_record_id,
        cast(null as varchar) as customer_id,
        'store' as channel,
        purchased_at as ordered_at,
        purchase_date as order_date,
        case when is_return then 'returned' else 'completed' end as status,
        cast(null as varchar) as currency,
        gross_amount,
        net_amount,
        false as is_cancelled,
        false as is_refunded,
        is_return
    from pos_transactions

),

unioned as (

    select * from online_orders
    union all
    select * from store_orders

),

attributed as (

    select
        unioned.order_id,
        person_map.person_id,
        unioned.channel,
        unioned.ordered_at,
        unioned.order_date,
        unioned.status,
        unioned.gross_amount,
        unioned.net_amount,
        unioned.is_cancelled,
        unioned.is_refunded,
        unioned.is_return,
        -- The one definition of a purchase; customer_rfm, customer_activity and the ML stage all read this column.
        -- A purchase is an order the customer kept: a cancelled or refunded order nets to nothing, and a
        -- return (or any negative amount) is money going back, so neither is a purchase. A zero-value order
        -- (a free item, a full discount: 80 of CDNOW's 69,659 lines) is: the customer bought.
        (
            not (unioned.is_cancelled or unioned.is_refunded or unioned.is_return)
            and unioned.net_amount >= 0
        ) as is_purchase,
        unioned.currency,
        unioned.customer_id,
        unioned.source_entity,
        unioned.source_record_id
    from unioned
    left join person_map
        on
            unioned.source_entity = person_map.source_entity
            and unioned.source_record_id = person_map.source_record_id
    where unioned.order_date <= cast('{{ as_of() }}' as date)

)

select * from attributed
