"""The identity graph resolved into persons.

Nodes are person records (crm:<id>, customer:<id>) and identifiers (email:, phone:, anon:, loyalty:), plus
records with no identifier at all. Edges are the deterministic links that passed their guardrails and the
probabilistic pairs at or above `match_threshold` without a birth-date conflict. Connected components
(scipy's graph traversal, exact in one pass) become persons; a component holding more person records
than `max_cluster_person_records` loses its probabilistic edges, then its shared-identifier edges, until it
fits, and every edge removed that way is kept with its rule.

person_id = 'p_' + first 16 hex chars of md5(anchor node), the anchor being the component's earliest-seen node
(ties by node id): the same data always gives the same ids, and a new day only changes the id of a person
whose anchor moved, i.e. who merged with an earlier-seen person.

Returns one row per edge (deterministic, probabilistic, and a 'self' row per node carrying the node's person).

Memory: nodes and edges stay in DuckDB; only integer arrays (the two ends of each edge, its class, one label
per node) come into numpy for the components, and the result is joined back in SQL, so the model fits at
1M customers (tens of millions of edges) where a DataFrame of every edge's strings did not.
"""

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Edge classes the maximum-cluster-size guardrail relaxes, weakest first.
RELAXED_RULES = (
    ("probabilistic",),
    ("email", "phone", "pos_phone_email", "pos_loyalty_email", "pos_loyalty_phone"),
)


def components(n_nodes: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    return labels


def resolve(
    is_person: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    active: np.ndarray,
    relax_class: np.ndarray,
    max_cluster: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Component label of every node and which edges the maximum cluster size removed. relax_class: 0 never
    relaxed, k = relaxed in round k (RELAXED_RULES[k - 1])."""
    active = active.copy()
    dropped = np.zeros(len(left), dtype=bool)
    weights = is_person.astype(float)
    for round_number in range(1, len(RELAXED_RULES) + 1):
        labels = components(len(is_person), left[active], right[active])
        sizes = np.bincount(labels, weights=weights)
        drop = active & (sizes[labels[left]] > max_cluster) & (relax_class == round_number)
        dropped |= drop
        active &= ~drop
    return components(len(is_person), left[active], right[active]), dropped


def temp_table(session, name: str, frame: pd.DataFrame) -> None:
    """`frame` as a temp table: the returned relation reads it after this model's code has finished."""
    session.register(f"{name}_frame", frame)
    try:
        session.execute(f"create or replace temp table {name} as select * from {name}_frame")
    finally:
        session.unregister(f"{name}_frame")


def model(dbt, session):
    dbt.config(materialized="table")
    threshold = float(dbt.config.get("match_threshold") or 0.95)
    floor = float(dbt.config.get("evidence_probability_floor") or 0.5)
    max_cluster = int(dbt.config.get("max_cluster_person_records") or 10)
    records = dbt.ref("int_identity_records_unioned").sql_query()
    links = dbt.ref("int_identity_links_guarded").sql_query()
    pairs = dbt.ref("int_person_pairs_scored").sql_query()
    relax = " ".join(
        f"when match_rule in ({', '.join(repr(rule) for rule in rules)}) then {number}"
        for number, rules in enumerate(RELAXED_RULES, start=1)
    )

    session.execute(f"""
        create or replace temp table tp_graph_edges_named as
        select left_node, right_node, match_rule, match_probability, match_weight, blocked_rule,
            (row_number() over (order by edge_class, left_node, right_node, match_rule) - 1)::bigint as edge_index
        from (
            select 0 as edge_class, owner_node as left_node, identifier_node as right_node, match_rule,
                1.0::double as match_probability, null::double as match_weight, blocked_rule
            from ({links})
            union all
            select 1, left_node, right_node, 'probabilistic', match_probability, match_weight,
                case
                    when is_birth_date_conflict then 'birth_date_conflict: birth dates differ by more than a typo'
                    when is_first_name_conflict then 'name_conflict: first names differ beyond typos and short forms'
                    when match_probability < {threshold!r}::double then 'below_threshold: probability under {threshold}'
                end
            from ({pairs})
            where match_probability >= {floor!r}::double
        )
    """)
    # every node, including identifiers that only occur on links
    session.execute(f"""
        create or replace temp table tp_graph_nodes as
        select (row_number() over (order by node_id) - 1)::bigint as node_index, node_id,
            min(seen_at) as seen_at, coalesce(bool_or(is_person_record), false) as is_person_record
        from (
            select node_id, seen_at, is_person_record from ({records})
            union all select left_node, null, null from tp_graph_edges_named
            union all select right_node, null, null from tp_graph_edges_named
        )
        group by node_id
    """)
    nodes = session.execute("select is_person_record from tp_graph_nodes order by node_index").fetchnumpy()
    edges = session.execute(f"""
        select l.node_index as left_index, r.node_index as right_index, e.blocked_rule is null as is_active,
            case {relax} else 0 end::tinyint as relax_class
        from tp_graph_edges_named as e
        join tp_graph_nodes as l on e.left_node = l.node_id
        join tp_graph_nodes as r on e.right_node = r.node_id
        order by e.edge_index
    """).fetchnumpy()
    labels, dropped = resolve(
        np.asarray(nodes["is_person_record"], dtype=bool),
        np.asarray(edges["left_index"], dtype=np.int64),
        np.asarray(edges["right_index"], dtype=np.int64),
        np.asarray(edges["is_active"], dtype=bool),
        np.asarray(edges["relax_class"], dtype=np.int8),
        max_cluster,
    )
    temp_table(
        session,
        "tp_graph_components",
        pd.DataFrame({"node_index": np.arange(len(labels), dtype=np.int64), "component": labels}),
    )
    temp_table(
        session, "tp_graph_dropped_edges", pd.DataFrame({"edge_index": np.flatnonzero(dropped).astype(np.int64)})
    )

    # Stable ids: the earliest-seen node of each component names it (ties by node id).
    session.execute("""
        create or replace temp table tp_graph_persons as
        with anchors as (
            select c.component, first(n.node_id order by n.seen_at asc nulls last, n.node_id) as anchor_node
            from tp_graph_nodes as n join tp_graph_components as c using (node_index)
            group by c.component
        )
        select n.node_id, a.anchor_node, 'p_' || left(md5(a.anchor_node), 16) as person_id
        from tp_graph_nodes as n
        join tp_graph_components as c using (node_index)
        join anchors as a using (component)
    """)
    too_big = f"max_cluster_size: component over {max_cluster} person records"
    return session.sql(f"""
        with edges as (
            select node_id as left_node, node_id as right_node, 'self' as match_rule,
                1.0::double as match_probability, null::double as match_weight, true as is_linked,
                null::varchar as blocked_rule
            from tp_graph_nodes
            union all
            select e.left_node, e.right_node, e.match_rule, e.match_probability, e.match_weight,
                e.blocked_rule is null and d.edge_index is null,
                case when d.edge_index is not null then '{too_big}' else e.blocked_rule end
            from tp_graph_edges_named as e
            left join tp_graph_dropped_edges as d using (edge_index)
        )
        select
            md5(edges.left_node || '|' || edges.right_node || '|' || edges.match_rule) as edge_id,
            edges.left_node,
            edges.right_node,
            edges.match_rule,
            edges.match_probability,
            edges.match_weight,
            edges.is_linked,
            edges.blocked_rule,
            l.person_id as left_person_id,
            r.person_id as right_person_id,
            l.anchor_node as left_anchor_node
        from edges
        join tp_graph_persons as l on edges.left_node = l.node_id
        join tp_graph_persons as r on edges.right_node = r.node_id
    """)
