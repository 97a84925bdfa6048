-- One row per person. Survivorship: each attribute comes from the person's CRM contact or shop customer
-- with a value, most recently updated first, shop customers before CRM contacts on equal time, then by record
-- id; the address fields travel together from one record. Email and phone fall back to identifiers seen only on
-- events (POS, email events) when no person record has one.

with

nodes as (

    select * from {{ ref('int_identity_nodes') }}

),

person_records as (

    select * from {{ ref('int_person_records_unioned') }}

),

graph as (

    select * from {{ ref('int_identity_graph_resolved') }}

),

node_persons as (

    {{ node_persons('graph') }}

),

ranked_records as (

    select
        node_persons.person_id,
        person_records.*,
        row_number() over (
            partition by node_persons.person_id
            order by
                person_records.updated_at desc nulls last,
                person_records.source_entity = 'crm_contacts',
                person_records.source_record_id asc
        ) as recency_rank
    from person_records
    inner join node_persons
        on person_records.node_id = node_persons.node_id

),

attributes as (

    select
        person_id,
        arg_min(first_name, recency_rank) filter (where first_name is not null) as first_name,
        arg_min(last_name, recency_rank) filter (where last_name is not null) as last_name,
        arg_min(email, recency_rank) filter (where email is not null) as email,
        arg_min(phone_e164, recency_rank) filter (where phone_e164 is not null) as phone_e164,
        arg_min(address_line1, recency_rank) filter (where address_line1 is not null) as address,
        arg_min(city, recency_rank) filter (where address_line1 is not null) as address_city,
        arg_min(postcode, recency_rank) filter (where address_line1 is not null) as address_postcode,
        arg_min(city, recency_rank) filter (where city is not null) as any_city,
        arg_min(postcode, recency_rank) filter (where postcode is not null) as any_postcode,
        arg_min(country, recency_rank) filter (where country is not null) as country,
        arg_min(birth_date, recency_rank) filter (where birth_date is not null) as birth_date
    from ranked_records
    group by person_id

),

identifier_fallbacks as (

    -- identifiers in the person's component, for people known only from events
    select
        left_person_id as person_id,
        min(substr(left_node, 7)) filter (where starts_with(left_node, 'email:')) as event_email,
        min(substr(left_node, 7)) filter (where starts_with(left_node, 'phone:')) as event_phone_e164
    from graph
    where match_rule = 'self'
    group by left_person_id

),

record_counts as (

    -- the person's records counted per node (int_identity_nodes), not one by one
    select
        node_persons.person_id,
        min(nodes.seen_at) as first_seen_at,
        sum(nodes.crm_contacts)::bigint as crm_contacts_count,
        sum(nodes.shop_customers)::bigint as shop_customers_count,
        sum(nodes.shop_orders)::bigint as shop_orders_count,
        sum(nodes.pos_transactions)::bigint as pos_transactions_count,
        sum(nodes.web_events)::bigint as web_events_count,
        sum(nodes.email_events)::bigint as email_events_count,
        bool_or(nodes.has_known_record) as is_known
    from nodes
    inner join node_persons
        on nodes.node_id = node_persons.node_id
    group by node_persons.person_id

),

final as (

    select
        record_counts.person_id,
        attributes.first_name,
        attributes.last_name,
        coalesce(attributes.email, identifier_fallbacks.event_email) as email,
        coalesce(attributes.phone_e164, identifier_fallbacks.event_phone_e164) as phone_e164,
        attributes.address,
        coalesce(attributes.address_city, attributes.any_city) as city,
        coalesce(attributes.address_postcode, attributes.any_postcode) as postcode,
        attributes.country,
        attributes.birth_date,
        record_counts.crm_contacts_count,
        record_counts.shop_customers_count,
        record_counts.shop_orders_count,
        record_counts.pos_transactions_count,
        record_counts.web_events_count,
        record_counts.email_events_count,
        record_counts.is_known,
        record_counts.first_seen_at
    from record_counts
    left join attributes
        on record_counts.person_id = attributes.person_id
    left join identifier_fallbacks
        on record_counts.person_id = identifier_fallbacks.person_id

)

select * from final
