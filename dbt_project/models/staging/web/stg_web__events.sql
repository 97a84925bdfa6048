with

source as (

    select * from {{ source('web', 'web_events') }}

),

latest as (

    -- an event extracted twice (overlapping extracts) is kept once
    select * from source
    where occurred_at < {{ as_of_end() }}
    qualify row_number() over (
        partition by trim(event_id)
        order by _extracted_at desc, _batch_id desc, _row_number desc
    ) = 1

),

renamed as (

    select
        trim(event_id) as event_id,
        occurred_at,
        cast(occurred_at as date) as event_date,
        lower(trim(event_type)) as event_type,
        nullif(trim(anonymous_id), '') as anonymous_id,
        nullif(trim(customer_id), '') as customer_id,
        nullif(trim(session_id), '') as session_id,
        nullif(trim(page_url), '') as page_url,
        nullif(trim(product_id), '') as product_id,
        nullif(lower(trim(device_type)), '') as device_type,
        nullif(lower(trim(channel)), '') as channel
    from latest

)

select * from renamed
