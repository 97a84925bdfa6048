-- Every identity-bearing record with its person and the rule that attached it: the next identity.person_map,
-- which identity.person_id_history compares with the previous run's map before person_map is replaced.
-- A view: its two readers each join the records (tens of millions) to the nodes, which costs less than writing
-- the result as a table and reading it back twice (docs/identity_engine.md, "Speed").
{{ config(materialized='view') }}

with

records as (

    select * from {{ ref('int_identity_records_unioned') }}

),

graph as (

    select * from {{ ref('int_identity_graph_resolved') }}

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

nodes as (

    -- person and strongest link per node, so the records (one per event) are joined once
    select
        node_persons.node_id,
        node_persons.person_id,
        node_rules.match_rule,
        node_rules.match_probability
    from node_persons
    left join node_rules
        on node_persons.node_id = node_rules.node_id

),

personed as (

    -- only what identity.person_map and identity.person_id_history read: one row per record is tens of
    -- millions of rows, and identity.persons and cluster_report count records per node (int_identity_nodes)
    select
        records.source_entity,
        records.source_record_id,
        nodes.person_id,
        case
            when records.is_person_record then coalesce(nodes.match_rule, 'own_record')
            else records.attach_rule
        end as match_rule,
        coalesce(nodes.match_probability, 1.0) as match_probability
    from records
    inner join nodes
        on records.node_id = nodes.node_id

)

select * from personed
