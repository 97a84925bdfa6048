with

source as (

    select * from {{ source('shop', 'shop_products') }}

),

latest as (

    select * from source
    where updated_at is null or updated_at < {{ as_of_end() }}
    qualify row_number() over (
        partition by trim(product_id)
        order by updated_at desc nulls last, _extracted_at desc, _batch_id desc, _row_number desc
    ) = 1

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
