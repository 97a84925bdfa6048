"""Why records were joined into one person or kept apart: the data behind `touchpoint identity explain`.

Reads the published warehouse only (identity.person_map, identity.match_evidence and the scored pairs in
intermediate.int_person_pairs_scored), read-only through the analyst shell's connection. The comparison levels'
labels come from the one place they are declared, the dbt model int_person_pairs_scored.py, so the explanation
can never name a level the model does not use. The published warehouse is the pseudonymised analytics file: a
record shows as itself ('crm_contacts:C-1', source-system ids are keys), an identifier node as its kind and
pseudonym ('email:<pseudonym>'); `touchpoint sql --pii` turns one back through `pii.identifier_nodes`.
Library code: it returns data, the CLI prints.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import duckdb

from touchpoint.config import dbt_project_dir
from touchpoint.privacy.pii_columns import PERSON_RECORD_NODE_PREFIX
from touchpoint.sql_text import quote_ident

PAIRS_MODEL = Path("models") / "intermediate" / "identity" / "int_person_pairs_scored.py"


@cache
def comparisons() -> dict[str, list[tuple[str, str]]]:
    """The comparisons and their levels as the scoring model declares them."""
    spec = importlib.util.spec_from_file_location("tp_pairs_model", dbt_project_dir() / PAIRS_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.COMPARISONS


def level_label(comparison: str, level: int) -> str:
    if level < 0:
        return "missing (no evidence)"
    if level == 0:
        return "different"
    return comparisons()[comparison][level - 1][0]


@dataclass(frozen=True)
class FieldContribution:
    comparison: str
    level: str
    weight: float  # log2 Bayes factor: positive for, negative against


@dataclass(frozen=True)
class Link:
    left_record: str
    right_record: str
    rule: str
    is_linked: bool
    probability: float | None
    blocked_rule: str | None
    fields: list[FieldContribution] = field(default_factory=list)
    prior_weight: float | None = None


@dataclass(frozen=True)
class Explanation:
    person_id: str
    records: list[dict]  # source_entity, source_record_id, match_rule, match_probability
    links: list[Link]  # edges inside the person, linked
    kept_apart: list[Link]  # edges from this person's records that were considered and not used


class NotFound(LookupError):
    pass


def resolve_person(con: duckdb.DuckDBPyConnection, subject: str) -> str:
    """A person id as given, or the person of a source record named '<source_entity>:<source_record_id>'."""
    if con.execute("select 1 from identity.persons where person_id = ?", [subject]).fetchone():
        return subject
    entity, _, record_id = subject.partition(":")
    found = con.execute(
        "select person_id from identity.person_map where source_entity = ? and source_record_id = ?",
        [entity, record_id],
    ).fetchone()
    if not found:
        raise NotFound(f"no person or source record {subject!r} (give a person_id or '<source_entity>:<record id>')")
    return found[0]


def _record_name(node: str) -> str:
    for entity, prefix in PERSON_RECORD_NODE_PREFIX.items():
        if node.startswith(prefix):
            return f"{entity}:{node[len(prefix):]}"
    return node


def _pair_fields(con: duckdb.DuckDBPyConnection, left: str, right: str) -> tuple[list[FieldContribution], float | None]:
    names = list(comparisons())
    columns = ", ".join(f"{quote_ident(name)}, {quote_ident(name + '_weight')}" for name in names)
    row = con.execute(
        f"select {columns}, log2(prior_match_probability / (1 - prior_match_probability)) "
        "from intermediate.int_person_pairs_scored where left_node = ? and right_node = ?",
        [min(left, right), max(left, right)],
    ).fetchone()
    if row is None:
        return [], None
    fields = [
        FieldContribution(name, level_label(name, row[2 * i]), float(row[2 * i + 1])) for i, name in enumerate(names)
    ]
    return fields, float(row[-1])


def _links(con: duckdb.DuckDBPyConnection, person_id: str, inside: bool) -> list[Link]:
    rows = con.execute(
        """
        select left_node, right_node, match_rule, is_linked, match_probability, blocked_rule
        from identity.match_evidence
        where (left_person_id = ? or right_person_id = ?)
          and ((left_person_id = right_person_id and is_linked) = ?)
        order by is_linked desc, match_probability desc nulls last, left_node, right_node
        """,
        [person_id, person_id, inside],
    ).fetchall()
    links = []
    for left, right, rule, linked, probability, blocked in rows:
        fields, prior = _pair_fields(con, left, right) if rule == "probabilistic" else ([], None)
        links.append(Link(_record_name(left), _record_name(right), rule, linked, probability, blocked, fields, prior))
    return links


def explain(con: duckdb.DuckDBPyConnection, subject: str) -> Explanation:
    """The records of the person `subject` names, the links that joined them and the ones that were not used."""
    person_id = resolve_person(con, subject)
    records = [
        dict(zip(("source_entity", "source_record_id", "match_rule", "match_probability"), row, strict=True))
        for row in con.execute(
            "select source_entity, source_record_id, match_rule, match_probability from identity.person_map "
            "where person_id = ? and source_entity in ('crm_contacts', 'shop_customers') order by 1, 2",
            [person_id],
        ).fetchall()
    ]
    return Explanation(person_id, records, _links(con, person_id, True), _links(con, person_id, False))
