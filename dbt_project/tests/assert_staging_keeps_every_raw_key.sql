-- Nothing disappears between raw and staging except superseded versions and rows after the as-of day:
-- per entity, the distinct keys in raw (as of the run date) equal the staging rows. The keys are trimmed as
-- staging trims them (macro trimmed).

with

raw_keys as (

    select
        'crm_contacts' as entity,
        count(distinct {{ trimmed('contact_id') }}) as key_count
    from {{ source('crm', 'crm_contacts') }}
    where updated_at is null or updated_at < {{ as_of_end() }}

    union all

    select
        'shop_customers' as entity,
        count(distinct {{ trimmed('customer_id') }}) as key_count
    from {{ source('shop', 'shop_customers') }}
    where updated_at is null or updated_at < {{ as_of_end() }}

    union all

    select
        'shop_orders' as entity,
        count(distinct {{ trimmed('order_id') }}) as key_count
    from {{ source('shop', 'shop_orders') }}
    where (updated_at is null or updated_at < {{ as_of_end() }}) and ordered_at < {{ as_of_end() }}

    union all

    select
        'shop_order_items' as entity,
        count(distinct {{ trimmed('order_id') }} || '-' || line_number) as key_count
    from {{ source('shop', 'shop_order_items') }}

    union all

    select
        'shop_products' as entity,
        count(distinct {{ trimmed('product_id') }}) as key_count
    from {{ source('shop', 'shop_products') }}
    where updated_at is null or updated_at < {{ as_of_end() }}

    union all

    select
        'web_events' as entity,
        count(distinct {{ trimmed('event_id') }}) as key_count
    from {{ source('web', 'web_events') }}
    where occurred_at < {{ as_of_end() }}

    union all

    select
        'email_events' as entity,
        count(distinct {{ trimmed('event_id') }}) as key_count
    from {{ source('email', 'email_events') }}
    where occurred_at < {{ as_of_end() }}

    union all

    select
        'pos_transactions' as entity,
        count(distinct {{ trimmed('transaction_id') }}) as key_count
    from {{ source('pos', 'pos_transactions') }}
    where purchased_at < {{ as_of_end() }}

),

staged_rows as (

    select
        'crm_contacts' as entity,
        count(*) as row_count
    from {{ ref('stg_crm__contacts') }}

    union all

    select
        'shop_customers' as entity,
        count(*) as row_count
    from {{ ref('stg_shop__customers') }}

    union all

    select
        'shop_orders' as entity,
        count(*) as row_count
    from {{ ref('stg_shop__orders') }}

    union all

    select
        'shop_order_items' as entity,
        count(*) as row_count
    from {{ ref('stg_shop__order_items') }}

    union all

    select
        'shop_products' as entity,
        count(*) as row_count
    from {{ ref('stg_shop__products') }}

    union all

    select
        'web_events' as entity,
        count(*) as row_count
    from {{ ref('stg_web__events') }}

    union all

    select
        'email_events' as entity,
        count(*) as row_count
    from {{ ref('stg_email__events') }}

    union all

    select
        'pos_transactions' as entity,
        count(*) as row_count
    from {{ ref('stg_pos__transactions') }}

)

select
    raw_keys.entity,
    raw_keys.key_count,
    staged_rows.row_count
from raw_keys
inner join staged_rows
    on raw_keys.entity = staged_rows.entity
where raw_keys.key_count <> staged_rows.row_count
