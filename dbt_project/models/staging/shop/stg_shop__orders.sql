with

source as (

    select * from {{ source('shop', 'shop_orders') }}

),

latest as (

    -- versions updated after the as-of day are hidden, then orders placed after it are dropped
    select * from source
    {{ as_of_latest_version('trim(order_id)', updated_at='updated_at', happened_at='ordered_at') }}

),

renamed as (

    select
        trim(order_id) as order_id,
        trim(customer_id) as customer_id,
        ordered_at,
        cast(ordered_at as date) as order_date,
        coalesce(nullif(lower(trim(status)), ''), 'placed') as status,
        nullif(upper(trim(currency)), '') as currency,
        total_amount as gross_amount,
        case
            when lower(trim(status)) in ('cancelled', 'refunded') then cast(0 as decimal(18, 2))
            else total_amount
        end as net_amount,
        coalesce(lower(trim(status)) = 'cancelled', false) as is_cancelled,
        coalesce(lower(trim(status)) = 'refunded', false) as is_refunded,
        updated_at,
        _batch_id as batch_id
    from latest

)

select * from renamed
