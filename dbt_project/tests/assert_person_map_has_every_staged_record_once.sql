-- Every staged record of the six identity-bearing entities appears in identity.person_map exactly once.
--
-- Checked per source entity by checksum first (macros/checksums.sql: the record count and two sums of the records'
-- 64-bit hashes), on both sides; only for an entity that differs are the records joined one by one, so a failure
-- still names them. A record missing, mapped twice or mapped without being staged changes the count or a sum.
-- Joining every record of both sides was 18.7 s of a 1M daily run (docs/data_engineers.md, "What a daily run
-- tests").

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

{%- for side, records in [('staged', 'staged'), ('mapped', ref('person_map'))] %}

    {{ side }}_hashes as (

        select
            source_entity,
            {{ checksum_row_hashes('source_record_id', shifted_values(['source_record_id'])) }}
        from {{ records }}

    ),

    {{ side }}_checksums as (

        select
            source_entity,
            {{ checksum_aggregates() }}
        from {{ side }}_hashes
        group by source_entity

    ),
{%- endfor %}

differing_entities as (

    select coalesce(staged_checksums.source_entity, mapped_checksums.source_entity) as source_entity
    from staged_checksums
    full outer join mapped_checksums
        on staged_checksums.source_entity = mapped_checksums.source_entity
    where {{ checksums_differ('staged_checksums', 'mapped_checksums') }}

),

staged_differing as (

    select * from staged
    where source_entity in (select differing_entities.source_entity from differing_entities)

),

mapped_differing as (

    select
        source_entity,
        source_record_id,
        count(*) as map_rows
    from {{ ref('person_map') }}
    where source_entity in (select differing_entities.source_entity from differing_entities)
    group by source_entity, source_record_id

)

select
    coalesce(staged_differing.source_entity, mapped_differing.source_entity) as source_entity,
    coalesce(staged_differing.source_record_id, mapped_differing.source_record_id) as source_record_id,
    coalesce(mapped_differing.map_rows, 0) as map_rows
from staged_differing
full outer join mapped_differing
    on
        staged_differing.source_entity = mapped_differing.source_entity
        and staged_differing.source_record_id = mapped_differing.source_record_id
where mapped_differing.map_rows is distinct from 1 or staged_differing.source_record_id is null
