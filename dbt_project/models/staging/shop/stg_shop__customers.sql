with

source as (

    select * from {{ source('shop', 'shop_customers') }}

),

latest as (

    -- versions updated after the as-of day are hidden; the latest remaining version wins
    select
        *,
        min(coalesce(created_at, updated_at)) over (partition by trim(customer_id)) as first_seen_at
    from source
    where updated_at is null or updated_at < {{ as_of_end() }}
    qualify row_number() over (
        partition by trim(customer_id)
        order by updated_at desc nulls last, _extracted_at desc, _batch_id desc, _row_number desc
    ) = 1

),

renamed as (

    select
        trim(customer_id) as customer_id,
        {{ cleaned_person_columns() }}
        created_at,
        updated_at,
        first_seen_at,
        _batch_id as batch_id,
        _extracted_at as extracted_at
    from latest

),

validated as (

    select
        customer_id,
        {{ validated_person_columns(extra_columns=['created_at']) }}
    from renamed

)

select * from validated
