-- Every identifier every raw row carries, normalised as staging normalises it: what erasure
-- (privacy/erasure.py) matches its suppression list against. All versions and all dates, with no as-of: an
-- erasure reaches rows this run does not read yet. One row per raw row and identifier; `record_id` is the
-- row's `source_record_id` in identity.person_map (null for entities the graph does not hold).

with

crm_contacts as (

    select * from {{ source('crm', 'crm_contacts') }}

),

consent_events as (

    select * from {{ source('crm', 'consent_events') }}

),

shop_customers as (

    select * from {{ source('shop', 'shop_customers') }}

),

shop_orders as (

    select * from {{ source('shop', 'shop_orders') }}

),

shop_order_items as (

    select * from {{ source('shop', 'shop_order_items') }}

),

web_events as (

    select * from {{ source('web', 'web_events') }}

),

email_events as (

    select * from {{ source('email', 'email_events') }}

),

pos_transactions as (

    select * from {{ source('pos', 'pos_transactions') }}

),

-- one row per raw row, one column per identifier kind (null when the row has none of that kind)
raw_rows as (

    select
        'crm_contacts' as source_entity,
        nullif(trim(contact_id), '') as record_id,
        _batch_id as batch_id,
        _row_number as row_number,
        {{ clean_email('email') }} as email,
        {{ phone_e164('phone', "(" ~ clean_country('country') ~ ")") }} as phone,
        nullif(trim(contact_id), '') as crm_contact,
        null::varchar as shop_customer,
        null::varchar as shop_order,
        null::varchar as loyalty_card,
        null::varchar as web_visitor
    from crm_contacts

    union all

    select
        'consent_events' as source_entity,
        null::varchar as record_id,
        _batch_id as batch_id,
        _row_number as row_number,
        {{ clean_email('subject_email') }} as email,
        {{ phone_e164('subject_phone', 'null') }} as phone,
        null::varchar as crm_contact,
        nullif(trim(customer_id), '') as shop_customer,
        null::varchar as shop_order,
        null::varchar as loyalty_card,
        null::varchar as web_visitor
    from consent_events

    union all

    select
        'shop_customers' as source_entity,
        nullif(trim(customer_id), '') as record_id,
        _batch_id as batch_id,
        _row_number as row_number,
        {{ clean_email('email') }} as email,
        {{ phone_e164('phone', "(" ~ clean_country('country') ~ ")") }} as phone,
        null::varchar as crm_contact,
        nullif(trim(customer_id), '') as shop_customer,
        null::varchar as shop_order,
        null::varchar as loyalty_card,
        null::varchar as web_visitor
    from shop_customers

    union all

    select
        'shop_orders' as source_entity,
        nullif(trim(order_id), '') as record_id,
        _batch_id as batch_id,
        _row_number as row_number,
        null::varchar as email,
        null::varchar as phone,
        null::varchar as crm_contact,
        nullif(trim(customer_id), '') as shop_customer,
        nullif(trim(order_id), '') as shop_order,
        null::varchar as loyalty_card,
        null::varchar as web_visitor
    from shop_orders

    union all

    select
        'shop_order_items' as source_entity,
        null::varchar as record_id,
        _batch_id as batch_id,
        _row_number as row_number,
        null::varchar as email,
        null::varchar as phone,
        null::varchar as crm_contact,
        null::varchar as shop_customer,
        nullif(trim(order_id), '') as shop_order,
        null::varchar as loyalty_card,
        null::varchar as web_visitor
    from shop_order_items

    union all

    select
        'web_events' as source_entity,
        nullif(trim(event_id), '') as record_id,
        _batch_id as batch_id,
        _row_number as row_number,
        null::varchar as email,
        null::varchar as phone,
        null::varchar as crm_contact,
        nullif(trim(customer_id), '') as shop_customer,
        null::varchar as shop_order,
        null::varchar as loyalty_card,
        nullif(trim(anonymous_id), '') as web_visitor
    from web_events

    union all

    select
        'email_events' as source_entity,
        nullif(trim(event_id), '') as record_id,
        _batch_id as batch_id,
        _row_number as row_number,
        {{ clean_email('email') }} as email,
        null::varchar as phone,
        null::varchar as crm_contact,
        null::varchar as shop_customer,
        null::varchar as shop_order,
        null::varchar as loyalty_card,
        null::varchar as web_visitor
    from email_events

    union all

    select
        'pos_transactions' as source_entity,
        nullif(trim(transaction_id), '') as record_id,
        _batch_id as batch_id,
        _row_number as row_number,
        {{ clean_email('email') }} as email,
        {{ phone_e164('phone', 'null') }} as phone,
        null::varchar as crm_contact,
        null::varchar as shop_customer,
        null::varchar as shop_order,
        nullif(trim(loyalty_id), '') as loyalty_card,
        null::varchar as web_visitor
    from pos_transactions

),

unpivoted as (

    unpivot raw_rows
    on email, phone, crm_contact, shop_customer, shop_order, loyalty_card, web_visitor
    into name identifier_kind value identifier

)

select
    source_entity,
    record_id,
    batch_id,
    row_number,
    identifier_kind,
    identifier
from unpivoted
