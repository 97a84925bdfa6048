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
"""

import hashlib

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def components(n_nodes: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    return labels


def model(dbt, session):
    dbt.config(materialized="table")
    threshold = float(dbt.config.get("match_threshold") or 0.95)
    floor = float(dbt.config.get("evidence_probability_floor") or 0.5)
    max_cluster = int(dbt.config.get("max_cluster_person_records") or 10)

    records = (
        dbt.ref("int_identity_records_unioned")
        .aggregate(
            "node_id, min(seen_at) as seen_at, bool_or(is_person_record) as is_person_record", "node_id"
        )
        .df()
    )
    links = dbt.ref("int_identity_links_guarded").df()
    pairs = dbt.ref("int_person_pairs_scored").df()

    deterministic = pd.DataFrame(
        {
            "left_node": links["owner_node"],
            "right_node": links["identifier_node"],
            "match_rule": links["match_rule"],
            "match_probability": 1.0,
            "match_weight": np.nan,
            "blocked_rule": links["blocked_rule"],
        }
    )
    probabilistic = pairs[(pairs["match_probability"] >= floor)]
    probabilistic = pd.DataFrame(
        {
            "left_node": probabilistic["left_node"],
            "right_node": probabilistic["right_node"],
            "match_rule": "probabilistic",
            "match_probability": probabilistic["match_probability"],
            "match_weight": probabilistic["match_weight"],
            "blocked_rule": np.where(
                probabilistic["is_birth_date_conflict"],
                "birth_date_conflict: birth dates differ by more than a typo",
                np.where(
                    probabilistic["is_first_name_conflict"],
                    "name_conflict: first names differ beyond typos and short forms",
                    np.where(
                        probabilistic["match_probability"] < threshold,
                        f"below_threshold: probability under {threshold}",
                        None,
                    ),
                ),
            ),
        }
    )
    edges = pd.concat([deterministic, probabilistic], ignore_index=True)
    edges["blocked_rule"] = edges["blocked_rule"].astype(object).where(edges["blocked_rule"].notna(), None)

    # every node, including identifiers that only occur on links
    node_ids = np.unique(
        np.concatenate(
            [
                records["node_id"].to_numpy(dtype=object),
                edges["left_node"].to_numpy(dtype=object),
                edges["right_node"].to_numpy(dtype=object),
            ]
        ).astype(str)
    )
    index = pd.Index(node_ids)
    nodes = pd.DataFrame({"node_id": node_ids}).merge(records, on="node_id", how="left")
    nodes["is_person_record"] = nodes["is_person_record"].fillna(False).astype(bool)
    is_person = nodes["is_person_record"].to_numpy()
    left = index.get_indexer(edges["left_node"].astype(str))
    right = index.get_indexer(edges["right_node"].astype(str))

    # Guardrail: maximum cluster size, relaxed edge class by edge class.
    active = edges["blocked_rule"].isna().to_numpy().copy()
    for weaker in (
        ["probabilistic"],
        ["email", "phone", "pos_phone_email", "pos_loyalty_email", "pos_loyalty_phone"],
    ):
        labels = components(len(node_ids), left[active], right[active])
        sizes = np.bincount(labels, weights=is_person.astype(float))
        oversized = sizes[labels[left]] > max_cluster
        drop = active & oversized & edges["match_rule"].isin(weaker).to_numpy()
        edges.loc[drop, "blocked_rule"] = f"max_cluster_size: component over {max_cluster} person records"
        active = active & ~drop
    labels = components(len(node_ids), left[active], right[active])

    # Stable ids: the earliest-seen node of each component names it.
    nodes["component"] = labels
    anchors = (
        nodes.assign(never_seen=nodes["seen_at"].isna())
        .sort_values(["component", "never_seen", "seen_at", "node_id"])
        .drop_duplicates("component")
        .set_index("component")["node_id"]
    )
    person_of_component = anchors.map(lambda node: "p_" + hashlib.md5(node.encode()).hexdigest()[:16])
    nodes["person_id"] = person_of_component.reindex(labels).to_numpy()
    nodes["anchor_node"] = anchors.reindex(labels).to_numpy()

    edges["is_linked"] = active
    self_rows = pd.DataFrame(
        {
            "left_node": nodes["node_id"],
            "right_node": nodes["node_id"],
            "match_rule": "self",
            "match_probability": 1.0,
            "match_weight": np.nan,
            "blocked_rule": None,
            "is_linked": True,
        }
    )
    out = pd.concat([self_rows, edges], ignore_index=True)
    person = pd.Series(nodes["person_id"].to_numpy(), index=nodes["node_id"])
    anchor = pd.Series(nodes["anchor_node"].to_numpy(), index=nodes["node_id"])
    out["left_person_id"] = person.reindex(out["left_node"].astype(str)).to_numpy()
    out["right_person_id"] = person.reindex(out["right_node"].astype(str)).to_numpy()
    out["left_anchor_node"] = anchor.reindex(out["left_node"].astype(str)).to_numpy()
    out["edge_id"] = [
        hashlib.md5(f"{a}|{b}|{r}".encode()).hexdigest()
        for a, b, r in zip(out["left_node"], out["right_node"], out["match_rule"], strict=True)
    ]
    out["match_weight"] = out["match_weight"].astype(float)
    out["match_probability"] = out["match_probability"].astype(float)
    return out[
        [
            "edge_id",
            "left_node",
            "right_node",
            "match_rule",
            "match_probability",
            "match_weight",
            "is_linked",
            "blocked_rule",
            "left_person_id",
            "right_person_id",
            "left_anchor_node",
        ]
    ]
