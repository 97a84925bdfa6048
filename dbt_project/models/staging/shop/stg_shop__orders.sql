with

source as (

    select * from {{ source('shop', 'shop_orders') }}

),

latest as (

    -- versions updated after the as-of day are hidden, then orders placed after it are dropped
    select * from source
    where
        (updated_at is null or updated_at < {{ as_of_end() }})
        and ordered_at < {{ as_of_end() }}
    qualify row_number() over (
        partition by trim(order_id)
        order by updated_at desc nulls last, _extracted_at desc, _batch_id desc, _row_number desc
    ) = 1

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
