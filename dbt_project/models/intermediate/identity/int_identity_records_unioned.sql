-- One row per staged record that carries an identity, with the graph node it attaches to: person records are
-- their own node (a shop customer is the node of its customer id), events attach to their strongest
-- identifier, and records without any identifier stand alone (the rule: the record_node macro, which the event
-- marts read too).
-- A view: a projection of the staging tables (the events' deduplication is done there, once, incrementally),
-- cheaper for its three readers to compute than to write as a table of every record (67M at 1M customers) and
-- read back; measured at 100k, the same tables and 9 s less (docs/identity_engine.md, "Speed (2026-12-04, evening)").
{{ config(materialized='view') }}

with

crm_contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

shop_customers as (

    select * from {{ ref('stg_shop__customers') }}

),

shop_orders as (

    select * from {{ ref('stg_shop__orders') }}

),

web_events as (

    select * from {{ ref('stg_web__events') }}

),

email_events as (

    select * from {{ ref('stg_email__events') }}

),

pos_transactions as (

    select * from {{ ref('stg_pos__transactions') }}

),

unioned as (

    select
        'crm_contacts' as source_entity,
        contact_id as source_record_id,
        {{ record_node('crm_contacts') }} as node_id,
        'crm_contact' as attach_rule,
        first_seen_at as seen_at,
        true as is_person_record,
        false as is_anonymous,
        null::varchar as login_anonymous_id
    from crm_contacts

    union all

    select
        'shop_customers' as source_entity,
        customer_id as source_record_id,
        {{ record_node('shop_customers') }} as node_id,
        'shop_customer_id' as attach_rule,
        first_seen_at as seen_at,
        true as is_person_record,
        false as is_anonymous,
        null::varchar as login_anonymous_id
    from shop_customers

    union all

    select
        'shop_orders' as source_entity,
        order_id as source_record_id,
        {{ record_node('shop_orders') }} as node_id,
        'shop_customer_id' as attach_rule,
        ordered_at as seen_at,
        false as is_person_record,
        false as is_anonymous,
        null::varchar as login_anonymous_id
    from shop_orders

    union all

    select
        'web_events' as source_entity,
        event_id as source_record_id,
        {{ record_node('web_events') }} as node_id,
        case
            when customer_id is not null then 'shop_customer_id'
            when anonymous_id is not null then 'anonymous_id'
            else 'unidentified'
        end as attach_rule,
        occurred_at as seen_at,
        false as is_person_record,
        customer_id is null as is_anonymous,
        -- the browser a login ties to the customer (int_identity_links_guarded reads it here rather than
        -- deduplicating the web events a second time)
        case when customer_id is not null then anonymous_id end as login_anonymous_id
    from web_events

    union all

    select
        'email_events' as source_entity,
        event_id as source_record_id,
        {{ record_node('email_events') }} as node_id,
        case when email is not null then 'email' else 'unidentified' end as attach_rule,
        occurred_at as seen_at,
        false as is_person_record,
        false as is_anonymous,
        null::varchar as login_anonymous_id
    from email_events

    union all

    select
        'pos_transactions' as source_entity,
        transaction_id as source_record_id,
        {{ record_node('pos_transactions') }} as node_id,
        case
            when loyalty_id is not null then 'loyalty_id'
            when phone_e164 is not null then 'phone'
            when email is not null then 'email'
            else 'unidentified'
        end as attach_rule,
        purchased_at as seen_at,
        false as is_person_record,
        false as is_anonymous,
        null::varchar as login_anonymous_id
    from pos_transactions

)

select * from unioned
