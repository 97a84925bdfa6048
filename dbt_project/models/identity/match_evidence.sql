with

graph as (

    select * from {{ ref('int_identity_graph_resolved') }}

),

evidence as (

    select
        edge_id as evidence_id,
        left_node,
        right_node,
        match_rule,
        match_probability,
        match_weight,
        is_linked,
        blocked_rule,
        split_part(blocked_rule, ':', 1) as blocked_by,
        left_person_id,
        right_person_id
    from graph
    where match_rule <> 'self'

)

select * from evidence
