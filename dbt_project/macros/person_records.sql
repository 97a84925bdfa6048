{#- The cleaned columns of a person record (CRM contact or shop customer), before validation: names, email,
    E.164 phone, address, city, postcode and country, normalised the same way for both sources. -#}
{% macro cleaned_person_columns() %}
        {{ clean_name('first_name') }} as first_name,
        {{ clean_name('last_name') }} as last_name,
        {{ fold('first_name') }} as first_name_key,
        {{ fold('last_name') }} as last_name_key,
        {{ clean_email('email') }} as email_cleaned,
        {{ phone_e164('phone', "(" ~ clean_country('country') ~ ")") }} as phone_cleaned,
        nullif(trim(phone), '') as phone_raw,
        nullif(trim(regexp_replace({{ printable('address_line1') }}, '\s+', ' ', 'g')), '') as address_line1,
        nullif(trim(regexp_replace({{ printable('address_line2') }}, '\s+', ' ', 'g')), '') as address_line2,
        {{ address_key('address_line1') }} as address_key,
        {{ clean_name('city') }} as city,
        {{ fold('city') }} as city_key,
        {{ clean_postcode('postcode', "(" ~ clean_country('country') ~ ")") }} as postcode_cleaned,
        nullif(upper(trim(region)), '') as region,
        {{ clean_country('country') }} as country,
        birth_date as birth_date_raw,
{%- endmacro %}

{#- The validated columns of a person record. CRM contacts and shop customers are cleaned alike (see
    `renamed` in their staging models), so one macro nulls invalid values, sets the `is_<field>_valid` flags
    and writes `invalid_reasons` for both. `extra_columns` pass through unchanged. -#}
{% macro validated_person_columns(extra_columns=[]) %}
        first_name,
        last_name,
        first_name_key,
        last_name_key,
        nullif(concat_ws(' ', first_name_key, last_name_key), '') as name_key,
        {{ validated_email_and_phone() }}
        address_line1,
        address_line2,
        address_key,
        city,
        city_key,
        case
            when {{ is_valid_postcode('postcode_cleaned', 'country') }} then postcode_cleaned
        end as postcode,
        {{ is_valid_postcode('postcode_cleaned', 'country') }} as is_postcode_valid,
        region,
        country,
        case
            -- not born yet as of the run; implausibly early dates never reach raw (ingest/plausibility.py)
            when birth_date_raw <= cast('{{ as_of() }}' as date)
                then birth_date_raw
        end as birth_date,
        birth_date_raw <= cast('{{ as_of() }}' as date) as is_birth_date_valid,
        {%- for column in extra_columns %}
        {{ column }},
        {%- endfor %}
        updated_at,
        first_seen_at,
        batch_id,
        extracted_at,
        nullif(concat_ws(
            '; ',
            {{ email_and_phone_problems() }},
            case
                when not {{ is_valid_postcode('postcode_cleaned', 'country') }}
                    then 'postcode: wrong format for country'
            end,
            case
                when birth_date_raw > cast('{{ as_of() }}' as date)
                    then 'birth_date: after as_of'
            end
        ), '') as invalid_reasons
{%- endmacro %}


{#- email, is_email_valid, phone_e164, is_phone_valid from `email_cleaned`, `phone_raw` and `phone_cleaned`:
    an invalid value is nulled and flagged false; a missing one stays null. Every record carrying an email or
    phone (person records, POS transactions, consent events) validates them with this one rule. -#}
{% macro validated_email_and_phone() -%}
        {{ valid_email('email_cleaned') }} as email,
        {{ is_valid_email('email_cleaned') }} as is_email_valid,
        case when {{ is_valid_phone('phone_cleaned') }} then phone_cleaned end as phone_e164,
        case when phone_raw is not null then coalesce({{ is_valid_phone('phone_cleaned') }}, false) end
            as is_phone_valid,
{%- endmacro %}

{#- The `invalid_reasons` entries for email and phone, as two concat_ws arguments. -#}
{% macro email_and_phone_problems() -%}
            case when not {{ is_valid_email('email_cleaned') }} then 'email: not a valid address' end,
            case
                when phone_raw is not null and not coalesce({{ is_valid_phone('phone_cleaned') }}, false)
                    then 'phone: not a valid number'
            end
{%- endmacro %}


{#- One person source's records with the attributes identity matches on: its node id (`prefix` || key), entity
    and key. CRM contacts and shop customers carry the same cleaned columns, so one select serves both. -#}
{% macro person_record_select(prefix, entity, key, relation) -%}
    select
        '{{ prefix }}' || {{ key }} as node_id,
        '{{ entity }}' as source_entity,
        {{ key }} as source_record_id,
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
    from {{ relation }}
{%- endmacro %}
