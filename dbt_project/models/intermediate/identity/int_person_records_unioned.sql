-- The records that describe a person (CRM contacts and shop customers) with the attributes used for matching.

with

crm_contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

shop_customers as (

    select * from {{ ref('stg_shop__customers') }}

),

unioned as (

    select
        'crm:' || contact_id as node_id,
        'crm_contacts' as source_entity,
        contact_id as source_record_id,
        first_name,
        last_name,
        first_name_key,
        {{ canonical_first_name('first_name_key') }} as first_name_canonical,
        last_name_key,
        email,
        phone_e164,
        address_line1,
        address_key,
        city,
        city_key,
        postcode,
        country,
        birth_date,
        updated_at,
        first_seen_at as seen_at
    from crm_contacts

    union all

    select
        'customer:' || customer_id as node_id,
        'shop_customers' as source_entity,
        customer_id as source_record_id,
        first_name,
        last_name,
        first_name_key,
        {{ canonical_first_name('first_name_key') }} as first_name_canonical,
        last_name_key,
        email,
        phone_e164,
        address_line1,
        address_key,
        city,
        city_key,
        postcode,
        country,
        birth_date,
        updated_at,
        first_seen_at as seen_at
    from shop_customers

)

select * from unioned
