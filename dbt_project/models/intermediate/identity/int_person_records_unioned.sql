-- The records that describe a person (CRM contacts and shop customers) with the attributes used for matching.
-- A full name written into one name field ('Anna Schmidt' or 'Schmidt, Anna' as first name, last name empty) is
-- split into first and last name keys, so it compares like any other record.

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
        first_name_key as written_first_name_key,
        last_name_key as written_last_name_key,
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
        first_name_key as written_first_name_key,
        last_name_key as written_last_name_key,
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

),

full_names as (

    select
        *,
        case
            when written_last_name_key is null and regexp_matches(trim(first_name), '[ ,]') then trim(first_name)
            when written_first_name_key is null and regexp_matches(trim(last_name), '[ ,]') then trim(last_name)
        end as one_field_name
    from unioned

),

name_keys as (

    select
        * exclude (one_field_name, written_first_name_key, written_last_name_key),
        case
            when one_field_name like '%,%' then {{ fold("split_part(one_field_name, ',', 2)") }}
            when one_field_name is not null then {{ fold("split_part(one_field_name, ' ', 1)") }}
            else written_first_name_key
        end as first_name_key,
        case
            when one_field_name like '%,%' then {{ fold("split_part(one_field_name, ',', 1)") }}
            when one_field_name is not null
                then {{ fold("substr(one_field_name, strpos(one_field_name, ' ') + 1)") }}
            else written_last_name_key
        end as last_name_key
    from full_names

)

select
    *,
    {{ canonical_first_name('first_name_key') }} as first_name_canonical
from name_keys
