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
    {{ as_of_latest_version('trim(customer_id)', updated_at='updated_at') }}

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
