-- One row per person, the largest first: how many records of each kind it holds, how they were joined, the
-- weakest probabilistic link holding it together, and the links considered for its records but not used.
-- For the people who own identity: start at size_rank 1 (the biggest clusters are where over-merging shows).

with

nodes as (

    select * from {{ ref('int_identity_nodes') }}

),

graph as (

    select * from {{ ref('int_identity_graph_resolved') }}

),

record_counts as (

    -- the person's records counted per node (int_identity_nodes), not one by one
    select
        graph.left_person_id as person_id,
        sum(nodes.records)::bigint as records,
        sum(nodes.person_records)::bigint as person_records,
        sum(nodes.crm_contacts)::bigint as crm_contacts,
        sum(nodes.shop_customers)::bigint as shop_customers,
        (
            (sum(nodes.crm_contacts) > 0)::integer
            + (sum(nodes.shop_customers) > 0)::integer
            + (sum(nodes.shop_orders) > 0)::integer
            + (sum(nodes.pos_transactions) > 0)::integer
            + (sum(nodes.web_events) > 0)::integer
            + (sum(nodes.email_events) > 0)::integer
        )::bigint as source_entities
    from nodes
    inner join graph
        on nodes.node_id = graph.left_node and graph.match_rule = 'self'
    group by graph.left_person_id

),

edge_ends as (

    select
        left_person_id as person_id,
        is_linked,
        match_rule,
        match_probability
    from graph
    where match_rule <> 'self'

    union all

    select
        right_person_id as person_id,
        is_linked,
        match_rule,
        match_probability
    from graph
    where match_rule <> 'self' and right_person_id <> left_person_id

),

link_counts as (

    select
        person_id,
        count(*) filter (where is_linked) as links_used,
        count(*) filter (where is_linked and match_rule = 'probabilistic') as probabilistic_links,
        min(match_probability) filter (where is_linked and match_rule = 'probabilistic')
            as weakest_link_probability,
        count(*) filter (where not is_linked) as links_not_used,
        count(*) filter (where match_rule in ('always_link', 'never_link')) as overrides
    from edge_ends
    group by person_id

),

report as (

    select
        record_counts.person_id,
        row_number() over (
            order by record_counts.person_records desc, record_counts.records desc, record_counts.person_id asc
        ) as size_rank,
        record_counts.person_records,
        record_counts.crm_contacts,
        record_counts.shop_customers,
        record_counts.records,
        record_counts.source_entities,
        coalesce(link_counts.links_used, 0) as links_used,
        coalesce(link_counts.probabilistic_links, 0) as probabilistic_links,
        link_counts.weakest_link_probability,
        coalesce(link_counts.links_not_used, 0) as links_not_used,
        coalesce(link_counts.overrides, 0) as overrides
    from record_counts
    left join link_counts
        on record_counts.person_id = link_counts.person_id

)

select * from report
