with

source as (

    select * from {{ source('pos', 'pos_transactions') }}

),

latest as (

    select * from source
    where purchased_at < {{ as_of_end() }}
    qualify row_number() over (
        partition by trim(transaction_id)
        order by _extracted_at desc, _batch_id desc, _row_number desc
    ) = 1

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
        case when {{ is_valid_phone('phone_cleaned') }} then phone_cleaned end as phone_e164,
        case when phone_raw is not null then coalesce({{ is_valid_phone('phone_cleaned') }}, false) end
            as is_phone_valid,
        case when {{ is_valid_email('email_cleaned') }} then email_cleaned end as email,
        {{ is_valid_email('email_cleaned') }} as is_email_valid,
        gross_amount,
        net_amount,
        is_return,
        nullif(concat_ws(
            '; ',
            case when not {{ is_valid_email('email_cleaned') }} then 'email: not a valid address' end,
            case
                when phone_raw is not null and not coalesce({{ is_valid_phone('phone_cleaned') }}, false)
                    then 'phone: not a valid number'
            end
        ), '') as invalid_reasons
    from renamed

)

select * from validated
