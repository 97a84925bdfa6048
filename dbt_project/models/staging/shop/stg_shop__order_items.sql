with

source as (

    select * from {{ source('shop', 'shop_order_items') }}

),

latest as (

    -- lines carry no time of their own: the as-of cut is applied through their order in the marts
    select * from source
    {{ as_of_latest_version('trim(order_id), line_number') }}

),

renamed as (

    select
        trim(order_id) || '-' || cast(line_number as varchar) as order_item_id,
        trim(order_id) as order_id,
        line_number,
        trim(product_id) as product_id,
        coalesce(quantity, 1) as quantity,
        unit_price,
        cast(coalesce(quantity, 1) * unit_price as decimal(18, 2)) as line_amount
    from latest

)

select * from renamed
