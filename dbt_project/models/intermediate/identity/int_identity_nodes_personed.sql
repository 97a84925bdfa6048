-- One row per graph node that records attach to: its person and how it joined that person (its strongest link).
-- A record's identity.person_map row is its node's row here with the record's own attach rule
-- (macro personed_records), so this table, a few million rows at 1M customers, is what decides the 70M record
-- rows; kept as it was at each identity.person_map build, it tells the next build which nodes' records to
-- rewrite (int_records_remapped).

with

graph as (

    select * from {{ ref('int_identity_graph_resolved') }}

),

nodes_with_records as (

    select node_id from {{ ref('int_identity_nodes') }}

),

node_persons as (

    {{ node_persons('graph') }}

),

linked_edge_ends as (

    select
        left_node as node_id,
        match_rule,
        match_probability
    from graph
    where is_linked and match_rule <> 'self'

    union all

    select
        right_node as node_id,
        match_rule,
        match_probability
    from graph
    where is_linked and match_rule <> 'self'

),

node_rules as (

    -- how a node joined its person: its strongest link, deterministic before probabilistic
    select * from linked_edge_ends
    qualify row_number() over (
        partition by node_id
        order by
            case match_rule
                when 'email' then 1
                when 'phone' then 2
                when 'pos_loyalty_email' then 3
                when 'pos_loyalty_phone' then 4
                when 'pos_phone_email' then 5
                when 'anonymous_id_login' then 6
                else 7
            end,
            match_probability desc,
            match_rule asc
    ) = 1

),

final as (

    -- identifiers seen only on links carry no record: left out, so the persons here are person_map's persons
    select
        node_persons.node_id,
        node_persons.person_id,
        node_rules.match_rule,
        node_rules.match_probability
    from node_persons
    inner join nodes_with_records
        on node_persons.node_id = nodes_with_records.node_id
    left join node_rules
        on node_persons.node_id = node_rules.node_id

)

select * from final
