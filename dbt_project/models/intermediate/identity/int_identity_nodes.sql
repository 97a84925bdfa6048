-- One row per graph node that records attach to, with what the records say about it: when it was first seen,
-- whether it is a person record, and how many records of each kind it holds. The records (one per event, tens
-- of millions) are aggregated here once; the graph, identity.persons and identity.cluster_report work on the
-- nodes (a few million) instead of each aggregating the records again.

with

records as (

    select * from {{ ref('int_identity_records_unioned') }}

)

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
    count(*) filter (where source_entity = 'web_events') as web_events,
    count(*) filter (where source_entity = 'email_events') as email_events
from records
group by node_id
