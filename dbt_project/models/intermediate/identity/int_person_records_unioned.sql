-- The records that describe a person (CRM contacts and shop customers) with the attributes used for matching.
-- A full name written into one name field ('Anna Schmidt' or 'Schmidt, Anna' as first name, last name empty) is
-- split into first and last name keys, so it compares like any other record.

with

unioned as (

    {{ person_record_select('crm:', 'crm_contacts', 'contact_id', ref('stg_crm__contacts')) }}

    union all

    {{ person_record_select('customer:', 'shop_customers', 'customer_id', ref('stg_shop__customers')) }}

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
