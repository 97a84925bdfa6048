with

source as (

    select * from {{ source('crm', 'crm_contacts') }}

),

latest as (

    -- versions updated after the as-of day are hidden; the latest remaining version wins
    select
        *,
        min(updated_at) over (partition by trim(contact_id)) as first_seen_at
    from source
    where updated_at is null or updated_at < {{ as_of_end() }}
    qualify row_number() over (
        partition by trim(contact_id)
        order by updated_at desc nulls last, _extracted_at desc, _batch_id desc, _row_number desc
    ) = 1

),

renamed as (

    select
        trim(contact_id) as contact_id,
        {{ clean_name('first_name') }} as first_name,
        {{ clean_name('last_name') }} as last_name,
        {{ fold('first_name') }} as first_name_key,
        {{ fold('last_name') }} as last_name_key,
        {{ clean_email('email') }} as email_cleaned,
        {{ phone_e164('phone', "(" ~ clean_country('country') ~ ")") }} as phone_cleaned,
        nullif(trim(phone), '') as phone_raw,
        nullif(trim(regexp_replace(address_line1, '\s+', ' ', 'g')), '') as address_line1,
        nullif(trim(regexp_replace(address_line2, '\s+', ' ', 'g')), '') as address_line2,
        {{ address_key('address_line1') }} as address_key,
        {{ clean_name('city') }} as city,
        {{ fold('city') }} as city_key,
        {{ clean_postcode('postcode', "(" ~ clean_country('country') ~ ")") }} as postcode_cleaned,
        nullif(upper(trim(region)), '') as region,
        {{ clean_country('country') }} as country,
        birth_date as birth_date_raw,
        coalesce(email_opt_in, false) as has_email_opt_in,
        updated_at,
        first_seen_at,
        _batch_id as batch_id,
        _extracted_at as extracted_at
    from latest

),

validated as (

    select
        contact_id,
        {{ validated_person_columns(extra_columns=['has_email_opt_in']) }}
    from renamed

)

select * from validated
