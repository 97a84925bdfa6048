-- Deterministic links between a node and an identifier it carries, with the guardrails applied: an identifier
-- shared by too many owners (a family mailbox, a call-centre number, a shop's shared tablet) or by person
-- records with conflicting birth dates or first names (a household's email or landline) links nobody, and the
-- reason is kept for identity.match_evidence.

with

person_records as (

    select * from {{ ref('int_person_records_unioned') }}

),

web_events as (

    select * from {{ ref('stg_web__events') }}

),

pos_transactions as (

    select * from {{ ref('stg_pos__transactions') }}

),

candidate_links as (

    select
        node_id as owner_node,
        'email:' || email as identifier_node,
        'email' as match_rule
    from person_records
    where email is not null

    union

    select
        node_id as owner_node,
        'phone:' || phone_e164 as identifier_node,
        'phone' as match_rule
    from person_records
    where phone_e164 is not null

    union

    -- a login ties the browser's anonymous id to the customer
    select
        'customer:' || customer_id as owner_node,
        'anon:' || anonymous_id as identifier_node,
        'anonymous_id_login' as match_rule
    from web_events
    where customer_id is not null and anonymous_id is not null

    union

    -- a till transaction ties its identifiers together, from the strongest one
    select
        'loyalty:' || loyalty_id as owner_node,
        'phone:' || phone_e164 as identifier_node,
        'pos_loyalty_phone' as match_rule
    from pos_transactions
    where loyalty_id is not null and phone_e164 is not null

    union

    select
        'loyalty:' || loyalty_id as owner_node,
        'email:' || email as identifier_node,
        'pos_loyalty_email' as match_rule
    from pos_transactions
    where loyalty_id is not null and email is not null

    union

    select
        'phone:' || phone_e164 as owner_node,
        'email:' || email as identifier_node,
        'pos_phone_email' as match_rule
    from pos_transactions
    where loyalty_id is null and phone_e164 is not null and email is not null

),

owner_counts as (

    select
        identifier_node,
        count(distinct owner_node) as owner_count
    from candidate_links
    group by identifier_node

),

limited as (

    select
        candidate_links.*,
        owner_counts.owner_count,
        case
            when candidate_links.match_rule = 'anonymous_id_login'
                then {{ var('identity_max_customers_per_device', 1) }}
            else {{ var('identity_max_owners_per_identifier', 5) }}
        end as owner_limit
    from candidate_links
    inner join owner_counts
        on candidate_links.identifier_node = owner_counts.identifier_node

),

owner_conflicts as (

    -- only identifiers under the cardinality limit: the self-join stays small
    select
        left_link.identifier_node,
        bool_or({{ birth_dates_conflict('left_person.birth_date', 'right_person.birth_date') }})
            as has_birth_date_conflict,
        bool_or({{ first_names_conflict(
            'left_person.first_name_key', 'left_person.first_name_canonical', 'left_person.last_name_key',
            'right_person.first_name_key', 'right_person.first_name_canonical', 'right_person.last_name_key'
        ) }}) as has_first_name_conflict
    from limited as left_link
    inner join limited as right_link
        on
            left_link.identifier_node = right_link.identifier_node
            and left_link.owner_node < right_link.owner_node
    inner join person_records as left_person
        on left_link.owner_node = left_person.node_id
    inner join person_records as right_person
        on right_link.owner_node = right_person.node_id
    where left_link.owner_count <= left_link.owner_limit
    group by left_link.identifier_node

),

guarded as (

    select
        md5(limited.owner_node || '|' || limited.identifier_node) as link_id,
        limited.owner_node,
        limited.identifier_node,
        limited.match_rule,
        limited.owner_count,
        limited.owner_limit,
        case
            when limited.owner_count > limited.owner_limit
                then
                    'identifier_cardinality: '
                    || limited.owner_count || ' owners share it (limit ' || limited.owner_limit || ')'
            when owner_conflicts.has_birth_date_conflict
                then 'birth_date_conflict: owners with different birth dates share it'
            when owner_conflicts.has_first_name_conflict
                then 'name_conflict: owners with different first names share it'
        end as blocked_rule
    from limited
    left join owner_conflicts
        on limited.identifier_node = owner_conflicts.identifier_node

)

select
    *,
    blocked_rule is null as is_linked
from guarded
