-- Deterministic links between a node and an identifier it carries, with the guardrails applied: an identifier
-- shared by too many owners (a family mailbox, a call-centre number, a shop's shared tablet) or by person
-- records the probabilistic model judges different people (a household's email or landline) links nobody, and
-- the reason is kept for identity.match_evidence.

with

person_records as (

    select * from {{ ref('int_person_records_unioned') }}

),

records as (

    select * from {{ ref('int_identity_records_unioned') }}

),

pos_transactions as (

    select * from {{ ref('stg_pos__transactions') }}

),

scored_pairs as (

    select * from {{ ref('int_person_pairs_scored') }}

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

    -- a login ties the browser's anonymous id to the customer (a web event's node is its customer's)
    select
        node_id as owner_node,
        'anon:' || login_anonymous_id as identifier_node,
        'anonymous_id_login' as match_rule
    from records
    where login_anonymous_id is not null

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

owner_pairs_differ as (

    -- Person records that share an identifier are one person only if the model, weighing every field (the
    -- shared identifier included), judges each pair of them a match: a household's landline or mailbox is
    -- shared by people whose names and birth dates say they differ. Every such pair is a candidate (the email
    -- and phone blocking rules reach past the owner limit).
    select left_link.identifier_node
    from limited as left_link
    inner join limited as right_link
        on
            left_link.identifier_node = right_link.identifier_node
            and left_link.owner_node < right_link.owner_node
    inner join person_records as left_person
        on left_link.owner_node = left_person.node_id
    inner join person_records as right_person
        on right_link.owner_node = right_person.node_id
    left join scored_pairs
        on
            left_link.owner_node = scored_pairs.left_node
            and right_link.owner_node = scored_pairs.right_node
    where left_link.owner_count <= left_link.owner_limit
    group by left_link.identifier_node
    having bool_or(coalesce(scored_pairs.match_probability, 0) < {{ var('identity_match_threshold') }})

),

guarded as (

    select
        md5({{ composite_id(['limited.owner_node', 'limited.identifier_node']) }}) as link_id,
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
            when owner_pairs_differ.identifier_node is not null
                then 'owners_differ: person records sharing it are judged different people'
        end as blocked_rule
    from limited
    left join owner_pairs_differ
        on limited.identifier_node = owner_pairs_differ.identifier_node

)

select
    *,
    blocked_rule is null as is_linked
from guarded
