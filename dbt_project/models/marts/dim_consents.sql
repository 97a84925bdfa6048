-- One row per person and purpose (seed consent_purposes): the current decision and where it came from.
-- The latest event wins (fct_consent_events); at the same instant a withdrawal beats a grant. With no event,
-- the purpose's legal basis decides: consent purposes are not granted until given, legitimate-interest
-- purposes are granted until the person objects.

with

persons as (

    select person_id from {{ ref('persons') }}

),

purposes as (

    select * from {{ ref('consent_purposes') }}

),

latest_events as (

    select
        person_id,
        purpose,
        is_granted,
        source,
        occurred_at,
        count(*) over (partition by person_id, purpose) as events_count
    from {{ ref('fct_consent_events') }}
    where person_id is not null
    qualify row_number() over (
        partition by person_id, purpose
        order by occurred_at desc, is_granted asc, source asc
    ) = 1

),

final as (

    select
        persons.person_id || ':' || purposes.purpose as consent_id,
        persons.person_id,
        purposes.purpose,
        coalesce(latest_events.is_granted, purposes.granted_by_default) as is_granted,
        coalesce(latest_events.source, 'default') as source,  -- noqa: RF04
        latest_events.occurred_at as updated_at,
        purposes.legal_basis,
        case
            when latest_events.is_granted then 'granted'
            when not latest_events.is_granted then 'withdrawn'
            when purposes.granted_by_default then 'granted_by_default'
            else 'not_given'
        end as consent_state,
        coalesce(latest_events.events_count, 0) as events_count
    from persons
    cross join purposes
    left join latest_events
        on
            persons.person_id = latest_events.person_id
            and purposes.purpose = latest_events.purpose

)

select * from final
