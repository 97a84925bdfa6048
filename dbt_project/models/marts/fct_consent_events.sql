-- Every consent grant and withdrawal the warehouse knows, as of the run date, with its time and source:
-- a CRM contact's email opt-in flag each time it changes, email unsubscribes and spam complaints, and the
-- consent extract's events (landing entity consent_events) for the purposes in the seed consent_purposes.
-- Events whose subject matches no person (yet) keep a null person_id: they apply once the person is known.

with

purposes as (

    select * from {{ ref('consent_purposes') }}

),

graph as (

    select * from {{ ref('int_identity_graph_resolved') }}

),

node_persons as (

    {{ node_persons('graph') }}

),

crm_versions as (

    -- every extracted version of a contact up to the as-of (staging keeps only the latest)
    select distinct
        trim(contact_id) as contact_id,
        coalesce(updated_at, _extracted_at) as occurred_at,
        email_opt_in
    from {{ source('crm', 'crm_contacts') }}
    where
        coalesce(updated_at, _extracted_at) < {{ as_of_end() }}
        and email_opt_in is not null

),

crm_changes as (

    -- a flag counts when it is a contact's first or differs from the version before it
    select
        'crm:' || contact_id as node_id,
        contact_id as source_record_id,
        'email_marketing' as purpose,
        email_opt_in as is_granted,
        occurred_at,
        'crm_contacts' as source  -- noqa: RF04
    from crm_versions
    qualify
        email_opt_in is distinct from lag(email_opt_in) over (
            partition by contact_id order by occurred_at asc, email_opt_in desc
        )

),

email_withdrawals as (

    select
        'email:' || email as node_id,
        event_id as source_record_id,
        'email_marketing' as purpose,
        false as is_granted,
        occurred_at,
        'email_events' as source  -- noqa: RF04
    from {{ ref('stg_email__events') }}
    where event_type in ('unsubscribe', 'unsubscribed', 'complaint', 'spam_complaint', 'complained')

),

extract_events as (

    select
        case
            when customer_id is not null then 'customer:' || customer_id
            when email is not null then 'email:' || email
            when phone_e164 is not null then 'phone:' || phone_e164
        end as node_id,
        consent_event_id as source_record_id,
        purpose,
        is_granted,
        occurred_at,
        source
    from {{ ref('stg_crm__consent_events') }}

),

events as (

    select * from crm_changes
    union all
    select * from email_withdrawals
    union all
    select * from extract_events

),

final as (

    select
        md5({{ composite_id(['events.source', 'events.source_record_id', 'events.purpose', 'events.occurred_at']) }})
            as consent_event_id,
        node_persons.person_id,
        events.purpose,
        events.is_granted,
        events.occurred_at,
        events.source,
        events.source_record_id
    from events
    inner join purposes on events.purpose = purposes.purpose
    left join node_persons on events.node_id = node_persons.node_id

)

select * from final
