-- Email-marketing consent per person: the latest signal wins (a CRM opt-in flag, or an unsubscribe event).

with

crm_contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

email_events as (

    select * from {{ ref('stg_email__events') }}

),

person_map as (

    select * from {{ ref('person_map') }}
    where source_entity in ('crm_contacts', 'email_events')

),

crm_signals as (

    select
        person_map.person_id,
        crm_contacts.has_email_opt_in as is_granted,
        'crm_contacts' as source,  -- noqa: RF04
        crm_contacts.updated_at,
        2 as precedence
    from crm_contacts
    inner join person_map
        on
            person_map.source_entity = 'crm_contacts'
            and crm_contacts.contact_id = person_map.source_record_id

),

unsubscribe_signals as (

    select
        person_map.person_id,
        false as is_granted,
        'email_events' as source,  -- noqa: RF04
        email_events.occurred_at as updated_at,
        1 as precedence
    from email_events
    inner join person_map
        on
            person_map.source_entity = 'email_events'
            and email_events.event_id = person_map.source_record_id
    where email_events.event_type in ('unsubscribe', 'unsubscribed')

),

signals as (

    select * from crm_signals
    union all
    select * from unsubscribe_signals

),

latest as (

    -- at the same instant an unsubscribe beats an opt-in (precedence 1 before 2)
    select * from signals
    where person_id is not null
    qualify row_number() over (
        partition by person_id
        order by updated_at desc nulls last, precedence asc, is_granted asc
    ) = 1

),

final as (

    select
        person_id || ':email_marketing' as consent_id,
        person_id,
        'email_marketing' as purpose,
        is_granted,
        source,
        updated_at
    from latest

)

select * from final
