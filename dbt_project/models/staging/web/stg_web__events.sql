{{ config(
    pre_hook="{{ staged_out_of_view('occurred_at') }}",
    post_hook="{{ record_staged_batches(source('web', 'web_events')) }}",
) }}

with

source as (

    select * from {{ source('web', 'web_events') }}
    {{ staged_delta(source('web', 'web_events'), trimmed('event_id'), 'occurred_at') }}

),

latest as (

    -- an event extracted twice (overlapping extracts) is kept once
    select * from source
    {{ as_of_latest_version(trimmed('event_id'), happened_at='occurred_at') }}

),

renamed as (

    select
        {{ trimmed('event_id') }} as event_id,
        occurred_at,
        cast(occurred_at as date) as event_date,
        lower(trim(event_type)) as event_type,
        nullif(trim(anonymous_id), '') as anonymous_id,
        nullif(trim(customer_id), '') as customer_id,
        {{ staged_session_id('session_id') }} as session_id,
        nullif(trim(page_url), '') as page_url,
        nullif(trim(product_id), '') as product_id,
        nullif(lower(trim(device_type)), '') as device_type,
        nullif(lower(trim(channel)), '') as channel,
        {{ written_by() }}
    from latest

)

select * from renamed
