{{ config(
    pre_hook="{{ staged_out_of_view('occurred_at') }}",
    post_hook="{{ record_staged_batches(source('email', 'email_events')) }}",
) }}

with

source as (

    select * from {{ source('email', 'email_events') }}
    {{ staged_delta(source('email', 'email_events'), trimmed('event_id'), 'occurred_at') }}

),

latest as (

    select * from source
    {{ as_of_latest_version(trimmed('event_id'), happened_at='occurred_at') }}

),

renamed as (

    select
        {{ trimmed('event_id') }} as event_id,
        occurred_at,
        cast(occurred_at as date) as event_date,
        {{ clean_email('email') }} as email_cleaned,
        lower(trim(event_type)) as event_type,
        nullif(trim(campaign_id), '') as campaign_id
    from latest

),

validated as (

    select
        event_id,
        occurred_at,
        event_date,
        {{ valid_email('email_cleaned') }} as email,
        coalesce({{ is_valid_email('email_cleaned') }}, false) as is_email_valid,
        event_type,
        campaign_id,
        case
            when not coalesce({{ is_valid_email('email_cleaned') }}, false) then 'email: not a valid address'
        end as invalid_reasons,
        {{ written_by() }}
    from renamed

)

select * from validated
