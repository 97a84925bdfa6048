"""The identity graph resolved into persons.

Nodes are person records (crm:<id>, customer:<id>) and identifiers (email:, phone:, anon:, loyalty:), plus
records with no identifier at all. Edges are the deterministic links that passed their guardrails, the
probabilistic pairs at or above `match_threshold`, and the manual `always_link` overrides.

Persons are judged as whole clusters, not pair by pair:
- cannot-link pairs are person records the model judged clearly different (a candidate pair scored below
  `cannot_link_below_probability`) and the manual `never_link` overrides;
- edges are added strongest first (overrides, then deterministic links, then probabilistic pairs by weight)
  into a union-find, and an edge that would put a cannot-link pair into one person is left out (kept in
  match_evidence as cluster_split or never_link). So a chain A-B-C, where A and C are clearly different
  people, loses its weakest link, and nothing else moves. Only components holding a cannot-link pair go
  through this, so the work is small;
- a component holding more person records than `max_cluster_person_records` then loses its probabilistic
  edges, then its shared-identifier edges, until it fits.

Overrides come from `<home>/identity/overrides.csv` (columns left_record, right_record, decision, reason;
records named '<source_entity>:<source_record_id>' as in identity.person_map, decision always_link or
never_link) and apply on every run.

person_id = 'p_' + first 16 hex chars of the keyed pseudonym (HMAC) of the anchor node, the anchor being the
component's earliest-seen node (ties by node id), keyed so a person id reveals no email: the same data always
gives the same ids, and a new day only changes the id of a person whose anchor moved, i.e. who merged with an
earlier-seen person.

Returns one row per edge (deterministic, probabilistic, override, and a 'self' row per node carrying the
node's person). Memory: nodes and edges stay in DuckDB; only integer arrays come into numpy for the
components, and the result is joined back in SQL.
"""

import os

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from touchpoint.frames import temp_table
from touchpoint.privacy.pii_columns import PERSON_RECORD_NODE_PREFIX
from touchpoint.privacy.pseudonyms import PSEUDONYM_PADS, hmac_sql

# Edge classes the maximum-cluster-size guardrail relaxes, weakest first.
RELAXED_RULES = (
    ("probabilistic",),
    ("email", "phone", "pos_phone_email", "pos_loyalty_email", "pos_loyalty_phone"),
)
# Strength for the cluster split: overrides are never left out, deterministic links only before nothing else
# would separate a cannot-link pair; probabilistic pairs by their match weight.
OVERRIDE_STRENGTH = 1e9
DETERMINISTIC_STRENGTH = 1e6


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


class _Sets:
    """Union-find whose sets remember which cannot-link partners their members have. Nodes are added as they
    are met, so one instance serves every component that needs splitting."""

    def __init__(self, cannot: list[tuple[int, int]]):
        self.parent: dict[int, int] = {}
        self.apart: dict[int, set[int]] = {}
        for a, b in cannot:
            self.apart.setdefault(a, set()).add(b)
            self.apart.setdefault(b, set()).add(a)

    def find(self, node: int) -> int:
        parent = self.parent
        root = parent.setdefault(node, node)
        while root != parent[root]:
            parent[root] = parent[parent[root]]
            root = parent[root]
        return root

    def join(self, a: int, b: int, force: bool = False) -> bool:
        """Merge the sets of a and b unless that puts a cannot-link pair together (`force`: merge anyway, for a
        manual always_link); True if they are one set."""
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return True
        apart_b = self.apart.get(root_b, set())
        if not force and any(self.find(x) == root_a for x in apart_b):
            return False
        self.parent[root_b] = root_a
        if apart_b:
            self.apart.setdefault(root_a, set()).update(apart_b)
        return True


def split_clusters(
    n_nodes: int,
    left: np.ndarray,
    right: np.ndarray,
    active: np.ndarray,
    strength: np.ndarray,
    cannot_left: np.ndarray,
    cannot_right: np.ndarray,
) -> np.ndarray:
    """The active edges left out so that no cannot-link pair ends in one component (strongest edges first).

    Only components holding a cannot-link pair are replayed, edge by edge, in one union-find: they are
    disjoint, so replaying them together, strongest edge first (ties by edge order), gives each the same result
    as replaying it alone, in time linear in their edges rather than components x all edges."""
    labels = components(n_nodes, left[active], right[active])
    together = labels[cannot_left] == labels[cannot_right]
    split = np.zeros(len(left), dtype=bool)
    if not together.any():
        return split
    conflicted = np.zeros(labels.max() + 1, dtype=bool)
    conflicted[labels[cannot_left[together]]] = True
    edges = np.flatnonzero(active & conflicted[labels[left]])
    edges = edges[np.lexsort((edges, -strength[edges]))]
    sets = _Sets(zip(cannot_left[together].tolist(), cannot_right[together].tolist(), strict=True))
    forced = strength[edges] >= OVERRIDE_STRENGTH
    for edge, force in zip(edges.tolist(), forced.tolist(), strict=True):
        if not sets.join(int(left[edge]), int(right[edge]), force=force):
            split[edge] = True
    return split


def read_overrides(path: str) -> pd.DataFrame:
    """The manual overrides as node pairs (left_node, right_node, decision, reason); none when no file."""
    columns = ["left_node", "right_node", "decision", "reason"]
    if not path or not os.path.isfile(path):
        return pd.DataFrame({column: pd.Series([], dtype=object) for column in columns})
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"left_record", "right_record", "decision"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    bad = frame.loc[~frame["decision"].isin(["always_link", "never_link"]), "decision"]
    if len(bad):
        raise ValueError(f"{path}: decision must be always_link or never_link, not {bad.iloc[0]!r}")

    def node(record: str) -> str:
        entity, _, record_id = record.partition(":")
        if entity not in PERSON_RECORD_NODE_PREFIX or not record_id:
            raise ValueError(f"{path}: {record!r} is not '<crm_contacts|shop_customers>:<record id>'")
        return PERSON_RECORD_NODE_PREFIX[entity] + record_id

    reasons = frame["reason"] if "reason" in frame.columns else ""
    return pd.DataFrame(
        {
            "left_node": frame["left_record"].map(node),
            "right_node": frame["right_record"].map(node),
            "decision": frame["decision"],
            "reason": reasons,
        },
        columns=columns,
    )


def load_edges(session, dbt, threshold: float, floor: float) -> None:
    """tp_graph_edges_named: every candidate edge with its rule, weight and blocked rule, in a fixed order."""
    links = dbt.ref("int_identity_links_guarded").sql_query()
    pairs = dbt.ref("int_person_pairs_scored").sql_query()
    session.execute(f"""
        create or replace temp table tp_graph_edges_named as
        select left_node, right_node, match_rule, match_probability, match_weight, blocked_rule, strength,
            (row_number() over (order by edge_class, left_node, right_node, match_rule) - 1)::bigint as edge_index
        from (
            select 0 as edge_class, left_node, right_node, 'always_link' as match_rule,
                1.0::double as match_probability, null::double as match_weight,
                null::varchar as blocked_rule, {OVERRIDE_STRENGTH} as strength
            from tp_graph_overrides where decision = 'always_link'
            union all
            select 1, owner_node, identifier_node, match_rule, 1.0::double, null::double, blocked_rule,
                {DETERMINISTIC_STRENGTH}
            from ({links})
            union all
            select 2, left_node, right_node, 'probabilistic', match_probability, match_weight,
                case when match_probability < {threshold!r}::double
                     then 'below_threshold: probability under {threshold}' end,
                match_weight
            from ({pairs})
            where match_probability >= {floor!r}::double
        )
    """)


def load_nodes(session, dbt) -> None:
    """tp_graph_nodes: every node, including identifiers that only occur on links."""
    nodes = dbt.ref("int_identity_nodes").sql_query()
    session.execute(f"""
        create or replace temp table tp_graph_nodes as
        select (row_number() over (order by node_id) - 1)::bigint as node_index, node_id,
            min(seen_at) as seen_at, coalesce(bool_or(is_person_record), false) as is_person_record
        from (
            select node_id, seen_at, is_person_record from ({nodes})
            union all select left_node, null, null from tp_graph_edges_named
            union all select right_node, null, null from tp_graph_edges_named
        )
        group by node_id
    """)


def cannot_links(session, dbt, below: float) -> dict[str, np.ndarray]:
    """Node index pairs that must not share a person: pairs scored clearly different, and never_link overrides."""
    pairs = dbt.ref("int_person_pairs_scored").sql_query()
    return session.execute(f"""
        select l.node_index as left_index, r.node_index as right_index
        from (
            select left_node, right_node from ({pairs}) where match_probability < {below!r}::double
            union all  -- a pair given twice is one constraint: no need to deduplicate millions of pairs
            select left_node, right_node from tp_graph_overrides where decision = 'never_link'
        ) as apart
        join tp_graph_nodes as l on apart.left_node = l.node_id
        join tp_graph_nodes as r on apart.right_node = r.node_id
    """).fetchnumpy()


def model(dbt, session):
    dbt.config(materialized="table")
    # each dbt.config.get on a line of its own: dbt's parser only sees calls that are not nested in another
    # (inside float(...) they were never passed to the model, and the defaults silently applied)
    threshold = dbt.config.get("match_threshold")
    floor = dbt.config.get("evidence_probability_floor")
    below = dbt.config.get("cannot_link_below_probability")
    max_cluster = dbt.config.get("max_cluster_person_records")
    overrides_file = dbt.config.get("overrides_file")
    threshold, floor, below, max_cluster = float(threshold), float(floor), float(below), int(max_cluster)
    temp_table(session, "tp_graph_overrides", read_overrides(overrides_file or ""))
    load_edges(session, dbt, threshold, floor)
    load_nodes(session, dbt)
    relax = " ".join(
        f"when match_rule in ({', '.join(repr(rule) for rule in rules)}) then {number}"
        for number, rules in enumerate(RELAXED_RULES, start=1)
    )
    nodes = session.execute("select is_person_record from tp_graph_nodes order by node_index").fetchnumpy()
    edges = session.execute(f"""
        select l.node_index as left_index, r.node_index as right_index, e.blocked_rule is null as is_active,
            case {relax} else 0 end::tinyint as relax_class, e.strength
        from tp_graph_edges_named as e
        join tp_graph_nodes as l on e.left_node = l.node_id
        join tp_graph_nodes as r on e.right_node = r.node_id
        order by e.edge_index
    """).fetchnumpy()
    left = np.asarray(edges["left_index"], dtype=np.int64)
    right = np.asarray(edges["right_index"], dtype=np.int64)
    active = np.asarray(edges["is_active"], dtype=bool)
    apart = cannot_links(session, dbt, below)
    split = split_clusters(
        len(nodes["is_person_record"]),
        left,
        right,
        active,
        np.asarray(edges["strength"], dtype=float),
        np.asarray(apart["left_index"], dtype=np.int64),
        np.asarray(apart["right_index"], dtype=np.int64),
    )
    labels, dropped = resolve(
        np.asarray(nodes["is_person_record"], dtype=bool),
        left,
        right,
        active & ~split,
        np.asarray(edges["relax_class"], dtype=np.int8),
        max_cluster,
    )
    temp_table(
        session,
        "tp_graph_components",
        pd.DataFrame({"node_index": np.arange(len(labels), dtype=np.int64), "component": labels}),
    )
    temp_table(
        session,
        "tp_graph_left_out",
        pd.DataFrame(
            {
                "edge_index": np.concatenate([np.flatnonzero(split), np.flatnonzero(dropped)]).astype(np.int64),
                # a string dtype even when empty, or DuckDB types the column as a number
                "reason": pd.Series(["split"] * int(split.sum()) + ["too_big"] * int(dropped.sum()), dtype="string"),
            }
        ),
    )
    return resolved_edges(session, max_cluster)


def resolved_edges(session, max_cluster: int):
    """Stable person ids (the earliest-seen node of each component names it) and every edge with its persons."""
    # keyed, not md5: an anchor may be an email node, and md5('email:' || an address) is anyone's to compute
    if session.execute(f"select getvariable('{PSEUDONYM_PADS}_ipad') is null").fetchall()[0][0]:
        raise RuntimeError("no pseudonymisation key on this connection: run dbt through touchpoint (privacy plugin)")
    person_key = hmac_sql("a.anchor_node")
    session.execute(f"""
        create or replace temp table tp_graph_persons as
        with anchors as (
            select c.component, first(n.node_id order by n.seen_at asc nulls last, n.node_id) as anchor_node
            from tp_graph_nodes as n join tp_graph_components as c using (node_index)
            group by c.component
        ),
        -- the keyed hash once per person, not once per node (a third as many at 100k customers)
        named as (
            select a.component, a.anchor_node, 'p_' || left({person_key}, 16) as person_id from anchors as a
        )
        select n.node_id, named.anchor_node, named.person_id
        from tp_graph_nodes as n
        join tp_graph_components as c using (node_index)
        join named using (component)
    """)
    too_big = f"max_cluster_size: component over {max_cluster} person records"
    split = "cluster_split: would join person records judged different"
    return session.sql(f"""
        with never_link as (
            select left_node, right_node, 'never_link' as match_rule, null::double as match_probability,
                null::double as match_weight, false as is_linked,
                'never_link: ' || coalesce(nullif(reason, ''), 'manual override') as blocked_rule
            from tp_graph_overrides where decision = 'never_link'
        ),
        edges as (
            select node_id as left_node, node_id as right_node, 'self' as match_rule,
                1.0::double as match_probability, null::double as match_weight, true as is_linked,
                null::varchar as blocked_rule
            from tp_graph_nodes
            union all
            select e.left_node, e.right_node, e.match_rule, e.match_probability, e.match_weight,
                e.blocked_rule is null and d.edge_index is null,
                case d.reason when 'too_big' then '{too_big}' when 'split' then '{split}' else e.blocked_rule end
            from tp_graph_edges_named as e
            left join tp_graph_left_out as d using (edge_index)
            union all
            select * from never_link
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
