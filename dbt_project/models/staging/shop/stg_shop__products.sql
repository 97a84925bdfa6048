with

source as (

    select * from {{ source('shop', 'shop_products') }}

),

latest as (

    select * from source
    {{ as_of_latest_version('trim(product_id)', updated_at='updated_at') }}

),

renamed as (

    select
        trim(product_id) as product_id,
        nullif(trim(regexp_replace(name, '\s+', ' ', 'g')), '') as product_name,
        nullif(lower(trim(category)), '') as category,
        price,
        updated_at
    from latest

)

select * from renamed
