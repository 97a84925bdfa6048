-- Every staged record of the six identity-bearing entities appears in identity.person_map exactly once.

with

staged as (

    select
        'crm_contacts' as source_entity,
        contact_id as source_record_id
    from {{ ref('stg_crm__contacts') }}

    union all

    select
        'shop_customers' as source_entity,
        customer_id as source_record_id
    from {{ ref('stg_shop__customers') }}

    union all

    select
        'shop_orders' as source_entity,
        order_id as source_record_id
    from {{ ref('stg_shop__orders') }}

    union all

    select
        'web_events' as source_entity,
        event_id as source_record_id
    from {{ ref('stg_web__events') }}

    union all

    select
        'email_events' as source_entity,
        event_id as source_record_id
    from {{ ref('stg_email__events') }}

    union all

    select
        'pos_transactions' as source_entity,
        transaction_id as source_record_id
    from {{ ref('stg_pos__transactions') }}

),

mapped as (

    select
        source_entity,
        source_record_id,
        count(*) as map_rows
    from {{ ref('person_map') }}
    group by source_entity, source_record_id

)

select
    coalesce(staged.source_entity, mapped.source_entity) as source_entity,
    coalesce(staged.source_record_id, mapped.source_record_id) as source_record_id,
    coalesce(mapped.map_rows, 0) as map_rows
from staged
full outer join mapped
    on staged.source_entity = mapped.source_entity and staged.source_record_id = mapped.source_record_id
where mapped.map_rows is distinct from 1 or staged.source_record_id is null
