-- One row per graph node that records attach to, with what the records say about it: when it was first seen,
-- whether it is a person record, and how many records of each kind it holds. The graph, identity.persons and
-- identity.cluster_report work on the nodes (a few million) instead of each aggregating the records (tens of
-- millions) again. The events, nine tenths of the records, come already aggregated per node
-- (int_identity_event_nodes, incremental); the other records are aggregated here, every run.

with

event_nodes as (

    select * from {{ ref('int_identity_event_nodes') }}

),

other_records as (

    select * from {{ ref('int_identity_records_unioned') }}
    where source_entity not in ({{ identity_event_entities() }})

),

other_nodes as (

    select
        node_id,
        min(seen_at) as seen_at,
        bool_or(is_person_record) as is_person_record,
        bool_or(not is_anonymous) as has_known_record,
        count(*) as records,
        count(*) filter (where is_person_record) as person_records,
        count(*) filter (where source_entity = 'crm_contacts') as crm_contacts,
        count(*) filter (where source_entity = 'shop_customers') as shop_customers,
        count(*) filter (where source_entity = 'shop_orders') as shop_orders,
        count(*) filter (where source_entity = 'pos_transactions') as pos_transactions,
        0::bigint as web_events,
        0::bigint as email_events
    from other_records
    group by node_id

),

unioned as (

    select * from other_nodes

    union all

    select
        node_id,
        seen_at,
        false as is_person_record,
        has_known_record,
        records,
        0::bigint as person_records,
        0::bigint as crm_contacts,
        0::bigint as shop_customers,
        0::bigint as shop_orders,
        0::bigint as pos_transactions,
        web_events,
        email_events
    from event_nodes

)

select
    node_id,
    min(seen_at) as seen_at,
    bool_or(is_person_record) as is_person_record,
    bool_or(has_known_record) as has_known_record,
    sum(records)::bigint as records,
    sum(person_records)::bigint as person_records,
    sum(crm_contacts)::bigint as crm_contacts,
    sum(shop_customers)::bigint as shop_customers,
    sum(shop_orders)::bigint as shop_orders,
    sum(pos_transactions)::bigint as pos_transactions,
    sum(web_events)::bigint as web_events,
    sum(email_events)::bigint as email_events
from unioned
group by node_id
