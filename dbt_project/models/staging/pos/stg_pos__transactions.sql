with

source as (

    select * from {{ source('pos', 'pos_transactions') }}

),

latest as (

    select * from source
    {{ as_of_latest_version('trim(transaction_id)', happened_at='purchased_at') }}

),

renamed as (

    select
        trim(transaction_id) as transaction_id,
        purchased_at,
        cast(purchased_at as date) as purchase_date,
        nullif(trim(store_id), '') as store_id,
        nullif(trim(loyalty_id), '') as loyalty_id,
        nullif(trim(phone), '') as phone_raw,
        {{ phone_e164('phone', 'null') }} as phone_cleaned,
        {{ clean_email('email') }} as email_cleaned,
        total_amount as gross_amount,
        total_amount as net_amount,
        total_amount < 0 as is_return
    from latest

),

validated as (

    select
        transaction_id,
        purchased_at,
        purchase_date,
        store_id,
        loyalty_id,
        {{ validated_email_and_phone() }}
        gross_amount,
        net_amount,
        is_return,
        nullif(concat_ws(
            '; ',
            {{ email_and_phone_problems() }}
        ), '') as invalid_reasons
    from renamed

)

select * from validated
