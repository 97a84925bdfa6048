"""Fellegi-Sunter scores for candidate pairs of person records (CRM contacts and shop customers).

Unsupervised, as Splink does it: u-probabilities from a fixed pseudo-random sample of record pairs (almost all
non-matches), m-probabilities by expectation-maximisation over blocked pairs in three training sessions, each
estimating only the comparisons its blocking keys do not fix, and a prior from the matches EM expects among
the blocked pairs spread over all n(n-1)/2 pairs. Nothing is hand-weighted and nothing is a veto: a disagreeing
birth date or first name is a level with its own learned m and u, so strong agreement elsewhere can outweigh
one mistyped field, and a household (same address and phone, other first name and birth date) is kept apart
by the same evidence. Exact name agreement is adjusted by term frequency: sharing a rare surname is stronger
evidence than sharing a common one. Missing values contribute nothing.

The comparisons (COMPARISONS) and blocking rules (BLOCKING_RULES) are declared once here and read by blocking,
EM, scoring and `touchpoint identity explain` (through the per-field weight columns). The threshold that turns
a score into a link, and the cluster checks, are in int_identity_graph_resolved.

Blocking: each rule is a key of one or more columns and two block caps. A pair is a candidate (compared,
scored, clustered) when it shares any rule's key in a block of at most the rule's scoring cap; a bigger block
says little (a key that common) and its pairs would grow quadratically. Keys combine a phonetic name code
(NYSIIS, from jellyfish), initials, birth date, postcode, street, email and phone, so a pair with typos in two
fields still shares some key; every rule's candidates stay linear in the number of records (at most cap/2 per
record). The estimates (EM sessions, match rate) read the pairs of blocks up to the wider estimation cap, the
part beyond the scoring cap as a fixed weighted sample: see BLOCKING_RULES.

Cost: the compared strings are read once per pair and not kept (tp_pairs_compared holds integer indices and
levels); whatever depends on one record only (birth date as digits, name frequencies) is computed per record;
EM sessions take their pairs from tp_pairs_compared by rule bits instead of comparing them again.

Why not Splink 5 itself: see docs/identity_engine.md (measured side by side on FEBRL 1-4 and the demo; Splink
took 331 s for the 1M person records alone, where this whole stage has to fit in about 400 s).

Daily builds: the model is incremental. A full build (the first, `--full-refresh`, and the pipeline's scheduled
full refresh, weekly by default: TOUCHPOINT_FULL_REFRESH_EVERY_DAYS) estimates m, u, the prior and the name
frequencies and keeps them beside the model (touchpoint/kept_state.py). A daily build scores with the kept
estimates, so a pair's score depends on its two records alone, and re-derives only the pairs a changed record can
move (affected_pairs: those of every block a changed record was or is in); every other row stands, as a full build
with the same estimates gives it (tests/test_identity_pairs_incremental.py, tests/test_incremental_identity.py).
What a daily build does not do is learn from the day's records: the estimates move at the next full build. The dbt
var identity_keep_estimates makes a full build score with the kept estimates instead (a rebuild comparable with the
daily builds since the last one). Kept estimates made under another definition (COMPARISONS, BLOCKING_RULES, ...)
or pseudonym key, or as of a later day than the run's (a run back in time), are estimated again, and an erasure
drops them (privacy/erasure.py).

Memory: candidate pairs never leave DuckDB. They are held as integer indices of the person records, EM runs
on the distinct comparison patterns with their pair counts (a few thousand, whatever the number of pairs),
and the scores are joined back by pattern in SQL, so DuckDB's memory_limit bounds the model.
"""

import hashlib
import json
from typing import NamedTuple

import jellyfish
import numpy as np
import pandas as pd

from touchpoint.config import run_as_of
from touchpoint.frames import temp_table
from touchpoint.kept_state import PAIR_SCORES_STATE, kept_table
from touchpoint.privacy.pseudonyms import hmac_sql
from touchpoint.sql_text import sql_literal
from touchpoint.warehouse import relation_exists

# (rule name, key columns of tp_pairs_people, largest block scored, largest block estimated from), in records.
# `names` is the two phonetic name codes in either order, so a record with first and last name written the wrong
# way round shares it.
#
# Two caps per rule, as Splink separates training from prediction blocking. A block of k records holds
# k(k-1)/2 pairs, so a cap c bounds a rule at (c-1)/2 pairs per record.
# - Scored (third value): 25 for every rule, at most 12 candidates per record. A key shared by more records is a
#   common value (a frequent name combination, a big building); the true pairs in such a block share a narrower
#   key too (`names` is refined by birth year, city and, per name, postcode). One name with a city is the
#   coarsest key, capped at 10; email and phone keep 20 (their blocks are the households the model has to see).
# - Estimated (fourth value): the m-probabilities (EM sessions) and the match rate that sets the prior are
#   estimated over the pairs of the wider blocks, the candidate set they were validated on. The match rate is
#   sensitive to it: pairs sharing a common full name and nothing else count towards it, so fewer of them
#   would lower the prior and every score (docs/identity_engine.md). Pairs of the wider blocks that are not
#   scored enter the estimates as a fixed 1-in-ESTIMATION_SAMPLE sample, weighted accordingly, so they cost
#   a tenth of their comparisons and none of their scoring and clustering.
# Measured (docs/identity_engine.md, "Speed"): at 1M customers `names` at cap 100 gave 10.5M of the 23.5M
# candidates; these caps give 12.3M and miss 0.12% more of the true pairs, pairs that share little but their
# names (none of those at 100k scored 0.8). On FEBRL 1-4 no block reaches 10 records.
BLOCKING_RULES = [
    ("names", ("names",), 25, 100),
    ("names_birth_year", ("names", "birth_year"), 25, 100),
    ("names_city", ("names", "city_key"), 25, 100),
    ("last_name_postcode", ("last_phonetic", "postcode"), 25, 100),
    ("first_name_postcode", ("first_phonetic", "postcode"), 25, 100),
    ("last_name_city", ("last_phonetic", "city_key"), 10, 25),
    ("first_name_city", ("first_phonetic", "city_key"), 10, 25),
    ("initials_postcode", ("first_initial", "last_initial", "postcode"), 25, 50),
    ("birth_date_first_initial", ("birth_date", "first_initial"), 25, 50),
    ("birth_date_last_initial", ("birth_date", "last_initial"), 25, 50),
    ("birth_date_postcode", ("birth_date", "postcode"), 25, 50),
    ("birth_date_city", ("birth_date", "city_key"), 25, 50),
    ("street_postcode", ("address_key", "postcode"), 25, 50),
    ("street_city", ("address_key", "city_key"), 25, 50),
    ("email", ("email",), 20, 20),
    ("phone", ("phone_e164",), 20, 20),
]
ESTIMATION_SAMPLE = 10

# EM sessions: (blocking rule name, comparisons it fixes and so cannot estimate). Every comparison is estimated
# in at least one session. None blocks on the address, email or phone: their blocks are mostly households,
# non-matches that agree on far more than random pairs do, and EM would take them for matches.
TRAINING_SESSIONS = [
    ("birth_date_first_initial", {"birth_date", "first_name"}),
    ("birth_date_last_initial", {"birth_date", "last_name"}),
    ("names", {"first_name", "last_name"}),
]

SAME_STREET = "l_address = r_address and (l_postcode = r_postcode or l_postcode is null or r_postcode is null)"
SAME_HOME = f"{SAME_STREET} and (l_phone = r_phone or l_email = r_email)"


def one_edit(left: str, right: str) -> str:
    """damerau_levenshtein(left, right) <= 1, written to run about four times faster: DuckDB's Levenshtein costs
    a fraction of its Damerau-Levenshtein, never exceeds it by more than the one transposition it does not
    know, and the conditions of a CASE stop at the first part that decides them."""
    return (
        f"(levenshtein({left}, {right}) <= 1"
        f" or (levenshtein({left}, {right}) = 2 and damerau_levenshtein({left}, {right}) = 1))"
    )


LAST_AGREES = f"(l_last = r_last or jaro_winkler_similarity(l_last, r_last) >= 0.9 or {one_edit('l_last', 'r_last')})"
LAST_NAME_AGREES = "last name agrees"
# Comparison -> levels in the order they are tested (the first that holds wins; none holding = 'different',
# level 0; a missing value on either side = level -1, no evidence). Level k is the k-th entry here.
# SQL sees l_<field> and r_<field>; first and last names are aligned first when they are swapped.
COMPARISONS = {
    "first_name": [
        ("exact", "l_first = r_first and length(l_first) > 1"),
        ("initial agrees", "least(length(l_first), length(r_first)) = 1 and left(l_first, 1) = left(r_first, 1)"),
        ("initial differs", "least(length(l_first), length(r_first)) = 1"),
        (
            "same full form or one edit",
            f"l_first_canonical = r_first_canonical or {one_edit('l_first', 'r_first')}",
        ),
        ("jaro-winkler >= 0.9", "jaro_winkler_similarity(l_first, r_first) >= 0.9"),
        ("jaro-winkler >= 0.8", "jaro_winkler_similarity(l_first, r_first) >= 0.8"),
    ],
    "last_name": [
        ("exact", "l_last = r_last"),
        ("one edit", one_edit("l_last", "r_last")),
        ("jaro-winkler >= 0.9", "jaro_winkler_similarity(l_last, r_last) >= 0.9"),
        ("jaro-winkler >= 0.8", "jaro_winkler_similarity(l_last, r_last) >= 0.8"),
    ],
    "birth_date": [
        ("exact", "l_birth = r_birth"),
        (
            "one keystroke or day/month swapped",
            # on the dates written YYYYMMDD, once per record in tp_pairs_people
            f"{one_edit('l_birth_digits', 'r_birth_digits')}"
            " or (year(l_birth) = year(r_birth) and month(l_birth) = day(r_birth) and day(l_birth) = month(r_birth))",
        ),
        ("within a year", "abs(date_diff('day', l_birth, r_birth)) <= 366"),
        ("within ten years", "abs(date_diff('day', l_birth, r_birth)) <= 3653"),
    ],
    # Street, postcode, city, phone and email are one comparison, and at a shared home the last name joins it:
    # they are strongly correlated (a household shares its street, landline, often a family mailbox and its
    # surname), and scoring them as independent would count one shared home three or four times, outweighing
    # two different first names. Their joint u comes from the random pairs like any other level's.
    "contact": [
        (f"same street and phone or email, {LAST_NAME_AGREES}", f"{SAME_HOME} and {LAST_AGREES}"),
        ("same street and phone or email, other last name", SAME_HOME),
        (f"same email, {LAST_NAME_AGREES}", f"l_email = r_email and {LAST_AGREES}"),
        ("same email, other last name", "l_email = r_email"),
        (f"same phone, {LAST_NAME_AGREES}", f"l_phone = r_phone and {LAST_AGREES}"),
        ("same phone, other last name", "l_phone = r_phone"),
        (f"same street, {LAST_NAME_AGREES}", f"{SAME_STREET} and {LAST_AGREES}"),
        ("same street, other last name", SAME_STREET),
        (
            "similar street",
            "jaro_winkler_similarity(l_address, r_address) >= 0.88"
            " and (l_postcode = r_postcode or l_postcode is null or r_postcode is null)",
        ),
        ("same postcode", "l_postcode = r_postcode"),
        ("same city", "l_city = r_city or jaro_winkler_similarity(l_city, r_city) >= 0.9"),
    ],
}
# Counted inside another comparison for the pair (level -1 here): the last name at a shared home.
COUNTED_ELSEWHERE = {"last_name": f"{SAME_STREET} or l_phone = r_phone or l_email = r_email"}
# the columns that make a comparison missing when null on either side
PRESENCE = {
    "first_name": ("first",),
    "last_name": ("last",),
    "birth_date": ("birth",),
    "contact": ("address", "postcode", "city", "phone", "email"),  # missing only when all are
}
# Exact agreement on these is adjusted by the value's frequency (Splink's term-frequency adjustment). A name's
# frequency is counted over both name fields: after a first/last swap is aligned, the agreeing value may be a
# surname standing in the first-name field, and its frequency there alone would make it look rare.
TERM_FREQUENCY = {"first_name": "first_name_key", "last_name": "last_name_key"}

# Starting m-probabilities for EM (and the values kept when there are too few pairs): level 0 (different)
# first, then the levels above in order. Mass on agreement; EM moves it.
PRIOR_M = {
    "first_name": [0.04, 0.75, 0.03, 0.01, 0.10, 0.04, 0.03],
    "last_name": [0.04, 0.82, 0.08, 0.04, 0.02],
    "birth_date": [0.02, 0.85, 0.08, 0.03, 0.02],
    "contact": [0.05, 0.35, 0.02, 0.20, 0.01, 0.05, 0.01, 0.15, 0.01, 0.05, 0.04, 0.06],
}
LEVELS = {name: len(levels) + 1 for name, levels in COMPARISONS.items()}
# What the comparisons and blocking read of a person record: tp_pairs_people's other columns derive from these.
COMPARED = (
    "first_name_key",
    "first_name_canonical",
    "last_name_key",
    "birth_date",
    "address_key",
    "postcode",
    "city_key",
    "email",
    "phone_e164",
)
SCORED_COLUMNS = ("left_index", "right_index", "blocking_rule", "scored")
MIN_PAIRS_FOR_EM = 50
U_SAMPLE_PAIRS = 1_000_000
U_PSEUDO_PAIRS = 1000
SEED = 20260331

PEOPLE_SQL = """
select
    (row_number() over (order by p.node_id) - 1)::integer as person_index,
    p.node_id, p.first_name_key, p.first_name_canonical, p.last_name_key, p.birth_date,
    strftime(p.birth_date, '%Y%m%d') as birth_digits, year(p.birth_date) as birth_year,
    p.address_key, p.postcode, p.city_key, p.email, p.phone_e164,
    left(p.first_name_key, 1) as first_initial, left(p.last_name_key, 1) as last_initial,
    first_code.phonetic as first_phonetic, last_code.phonetic as last_phonetic,
    case when first_code.phonetic is not null and last_code.phonetic is not null
         then least(first_code.phonetic, last_code.phonetic) || '|' || greatest(first_code.phonetic, last_code.phonetic)
    end as names
from ({people}) as p
left join tp_name_codes as first_code on p.first_name_key = first_code.name_key
left join tp_name_codes as last_code on p.last_name_key = last_code.name_key
"""

# Everything derived from one record alone (phonetic codes, the birth date as digits, name frequencies) is
# computed once per record in tp_pairs_people, not once per pair. `swapped` is computed below the second join on
# purpose: above it, DuckDB would inline the four Jaro-Winkler calls into every use of the aligned names.
ALIGNED_SQL = """
select
    pairs.*,
    l.first_name_key as l_first, l.first_name_canonical as l_first_canonical, l.last_name_key as l_last,
    -- first and last name written the wrong way round are compared aligned
    case when swapped then r.last_name_key else r.first_name_key end as r_first,
    case when swapped then r.last_name_key else r.first_name_canonical end as r_first_canonical,
    case when swapped then r.first_name_key else r.last_name_key end as r_last,
    l.birth_date as l_birth, r.birth_date as r_birth,
    l.birth_digits as l_birth_digits, r.birth_digits as r_birth_digits,
    l.address_key as l_address, r.address_key as r_address,
    l.postcode as l_postcode, r.postcode as r_postcode,
    l.city_key as l_city, r.city_key as r_city,
    l.email as l_email, r.email as r_email,
    l.phone_e164 as l_phone, r.phone_e164 as r_phone
from (
    select pairs.*,
        -- swapped when the names agree clearly better crosswise than straight (typos in them allowed)
        coalesce(jaro_winkler_similarity(l.first_name_key, r.last_name_key), 0)
            + coalesce(jaro_winkler_similarity(l.last_name_key, r.first_name_key), 0)
            > coalesce(jaro_winkler_similarity(l.first_name_key, r.first_name_key), 0)
            + coalesce(jaro_winkler_similarity(l.last_name_key, r.last_name_key), 0) + 0.2 as swapped
    from {pairs} as pairs
    join tp_pairs_people as l on pairs.left_index = l.person_index
    join tp_pairs_people as r on pairs.right_index = r.person_index
) as pairs
join tp_pairs_people as l on pairs.left_index = l.person_index
join tp_pairs_people as r on pairs.right_index = r.person_index
"""


def level_sql(name: str) -> str:
    """The CASE giving comparison `name`'s level for an aligned pair."""
    sides = PRESENCE[name]
    left = ", ".join("l_" + side for side in sides)
    right = ", ".join("r_" + side for side in sides)
    missing = f"coalesce({left}) is null or coalesce({right}) is null"
    if name in COUNTED_ELSEWHERE:
        missing += f" or coalesce({COUNTED_ELSEWHERE[name]}, false)"
    whens = "".join(f" when {condition} then {level}" for level, (_, condition) in enumerate(COMPARISONS[name], 1))
    return f"(case when {missing} then -1{whens} else 0 end)::tinyint as {name}"


def comparison_sql(pairs: str, keep: tuple[str, ...] = ("left_index", "right_index")) -> str:
    """Every pair of `pairs` (left_index, right_index, ...) with its level per comparison; of the pair's own
    columns only `keep` (the compared strings are not carried along)."""
    levels = ",\n    ".join(level_sql(name) for name in COMPARISONS)
    return f"select {', '.join(keep)}, {levels}\nfrom ({ALIGNED_SQL.format(pairs=pairs)})"


def block_key_sql(keys: tuple[str, ...], side: str = "") -> str:
    """A blocking rule's key as one text, null when any of its columns is (`side`: a table alias and dot)."""
    return " || '|' || ".join(f"cast({side}{key} as varchar)" for key in keys)


def blocked_pairs_sql(rule_number: int, keys: tuple[str, ...], cap: int, estimation_cap: int) -> str:
    """Pairs (left before right) sharing rule `rule_number`'s key, in blocks of at most the larger cap; `scored`
    when the block is within `cap`."""
    present = " and ".join(f"{key} is not null" for key in keys)
    key = block_key_sql(keys)
    return f"""
        select l.person_index as left_index, r.person_index as right_index, {rule_number} as blocking_rule,
            l.block_size <= {cap} as scored
        from (
            select person_index, block_key, block_size from (
                select person_index, {key} as block_key, count(*) over (partition by {key}) as block_size
                from tp_pairs_people where {present}
            ) where block_size between 2 and {max(cap, estimation_cap)}
        ) as l
        join (
            select person_index, {key} as block_key from tp_pairs_people where {present}
        ) as r on l.block_key = r.block_key and l.person_index < r.person_index"""


def candidate_pairs_sql(rule_numbers: list[int]) -> str:
    """Distinct pairs agreeing on any of the rules (1-based numbers into BLOCKING_RULES): the `scored` ones (the
    candidates, with the first rule that found them) and a fixed sample of the others (`weight` pairs each).
    `rules` has bit k - 1 set when rule k's estimation blocks hold the pair, so an EM session takes its pairs
    from the compared ones instead of blocking and comparing them again."""
    selects = [blocked_pairs_sql(number, *BLOCKING_RULES[number - 1][1:]) for number in rule_numbers]
    return f"""
        select left_index, right_index, min(blocking_rule) filter (where scored) as blocking_rule,
            bit_or(1 << (blocking_rule - 1))::integer as rules, bool_or(scored) as scored,
            (case when bool_or(scored) then 1 else {ESTIMATION_SAMPLE} end)::integer as weight
        from ({" union all ".join(selects)})
        group by left_index, right_index
        having bool_or(scored) or hash(left_index, right_index) % {ESTIMATION_SAMPLE} = 0"""


def rule_bit(rule: str) -> int:
    return 1 << next(number for number, (name, *_) in enumerate(BLOCKING_RULES) if name == rule)


def random_pairs(n: int) -> pd.DataFrame:
    """A fixed pseudo-random sample of pairs of distinct records, to estimate how often non-matches agree."""
    if n < 2:
        return pd.DataFrame({"left_index": [], "right_index": []}, dtype="int64")
    rng = np.random.default_rng(SEED)
    size = min(U_SAMPLE_PAIRS, n * (n - 1) // 2)
    left = rng.integers(0, n, size)
    right = rng.integers(0, n, size)
    keep = left != right
    low, high = np.minimum(left[keep], right[keep]), np.maximum(left[keep], right[keep])
    return pd.DataFrame({"left_index": low, "right_index": high})


def counted_patterns(session, compared: str, pairs: str = "count(*)") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The distinct comparison vectors in `compared` (a table or query with the COMPARISONS columns) and how
    many pairs have each (`pairs`: sum(weight) for the weighted sample in tp_pairs_compared)."""
    levels = ", ".join(COMPARISONS)
    rows = session.execute(f"select {levels}, {pairs} as pairs from {compared} group by all order by all").fetchnumpy()
    return {name: rows[name].astype(np.int64) for name in COMPARISONS}, rows["pairs"].astype(float)


def patterns(session, pairs: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """counted_patterns of `pairs` (a table or subquery of left_index, right_index) once compared."""
    return counted_patterns(session, f"({comparison_sql(pairs)})")


def prior_u(levels: int) -> np.ndarray:
    """What two random records look like before any are counted: they differ; any agreement level is rare."""
    chance = np.full(levels, 0.01 / (levels - 1))
    chance[0] = 0.99
    return chance


def estimate_u(matrix: dict[str, np.ndarray], counts: np.ndarray) -> dict[str, np.ndarray]:
    """Level frequencies among random pairs, smoothed towards prior_u by U_PSEUDO_PAIRS: negligible with a full
    sample, but a handful of records (a new warehouse, a test) still gets sensible weights, and no level u = 0."""
    u = {}
    for name, levels in LEVELS.items():
        observed = matrix[name] >= 0
        frequency = np.bincount(matrix[name][observed], weights=counts[observed], minlength=levels)[:levels]
        smoothed = frequency + U_PSEUDO_PAIRS * prior_u(levels)
        u[name] = smoothed / smoothed.sum()
    return u


def expectation_maximisation(
    matrix: dict[str, np.ndarray],
    counts: np.ndarray,
    u: dict[str, np.ndarray],
    fixed: set[str],
    max_iterations: int = 100,
):
    """m-probabilities of the comparisons not in `fixed`, u held fixed, over patterns weighted by their pair
    counts; same input, same output. Returns (None, 0) when there are too few pairs to learn from."""
    free = [name for name in LEVELS if name not in fixed]
    m = {name: np.array(PRIOR_M[name], dtype=float) for name in free}
    if counts.sum() < MIN_PAIRS_FOR_EM:
        return None, 0
    free_matrix = {name: matrix[name] for name in free}
    rate = 0.5
    for iteration in range(1, max_iterations + 1):  # noqa: B007 (returned)
        mass_of_pattern = counts / (1.0 + np.power(2.0, -match_weights(free_matrix, m, u, rate)))
        new_m = {}
        for name in free:
            observed = matrix[name] >= 0
            mass = np.bincount(matrix[name][observed], weights=mass_of_pattern[observed], minlength=LEVELS[name])
            # one pseudo-pair per level: no level is ever impossible for a match
            mass = mass[: LEVELS[name]] + 1.0
            new_m[name] = mass / mass.sum()
        new_rate = float(np.clip(mass_of_pattern.sum() / counts.sum(), 1e-6, 1 - 1e-6))
        change = max(max(np.abs(new_m[k] - m[k]).max() for k in free), abs(new_rate - rate))
        m, rate = new_m, new_rate
        if change < 1e-6:
            break
    return m, iteration


def candidate_match_rate(matrix: dict[str, np.ndarray], counts: np.ndarray, m, u, max_iterations: int = 200):
    """Share of candidate pairs that match, by EM on the rate alone with m and u fixed."""
    if counts.sum() == 0:
        return 0.0
    rate = 0.5
    for _ in range(max_iterations):
        probability = 1.0 / (1.0 + np.power(2.0, -match_weights(matrix, m, u, rate)))
        new_rate = float(np.clip((probability * counts).sum() / counts.sum(), 1e-9, 1 - 1e-9))
        if abs(new_rate - rate) < 1e-9:
            break
        rate = new_rate
    return rate


def field_weights(matrix, m, u) -> dict[str, np.ndarray]:
    """log2 Bayes factor of each comparison's level, per comparison vector (0 where the value is missing)."""
    weights = {}
    for name in matrix:
        levels = matrix[name]
        factor = np.log2(m[name] / u[name])
        weights[name] = np.where(levels >= 0, factor[np.maximum(levels, 0)], 0.0)
    return weights


def match_weights(matrix, m, u, rate) -> np.ndarray:
    """log2 Bayes factor of each comparison vector plus the prior log-odds of a match."""
    size = len(next(iter(matrix.values())))
    return np.log2(rate / (1 - rate)) + sum(field_weights(matrix, m, u).values(), np.zeros(size))


def name_codes(session, people: str) -> pd.DataFrame:
    """NYSIIS code of every distinct first and last name key (a few thousand values, not one per record)."""
    keys = session.execute(
        f"select distinct name_key from (select first_name_key as name_key from ({people}) "
        f"union select last_name_key from ({people})) where name_key is not null order by 1"
    ).fetchnumpy()["name_key"]
    codes = [jellyfish.nysiis(key) or None for key in keys]
    # a code of one or two letters (short or non-Latin names) is too coarse: the key itself stands in
    codes = [code if code and len(code) > 2 else key for key, code in zip(keys, codes, strict=True)]
    return pd.DataFrame({"name_key": pd.Series(keys, dtype=object), "phonetic": pd.Series(codes, dtype=object)})


def train_m(session, u: dict[str, np.ndarray]) -> tuple[dict, int]:
    """m by EM over the training sessions, u held fixed (averaged where several sessions estimate a comparison).
    A session's pairs are the compared candidates (tp_pairs_compared) its blocking rule found."""
    estimates = {name: [] for name in COMPARISONS}
    iterations = 0
    for rule, fixed in TRAINING_SESSIONS:
        session_m, session_iterations = expectation_maximisation(
            *counted_patterns(
                session, f"(select * from tp_pairs_compared where rules & {rule_bit(rule)} <> 0)", "sum(weight)"
            ),
            u,
            fixed,
        )
        iterations = max(iterations, session_iterations)
        for name, values in (session_m or {}).items():
            estimates[name].append(values)
    m = {
        name: np.mean(found, axis=0) if found else np.array(PRIOR_M[name], dtype=float)
        for name, found in estimates.items()
    }
    return m, iterations


def prior_and_rate(session, m, u, n: int) -> tuple[float, float]:
    """The match rate among the pairs of the estimation blocks (the sample standing in for their unscored part),
    and the prior of two random records matching (Splink's probability_two_random_records_match): the matches
    expected among those pairs spread over all n(n-1)/2 pairs."""
    estimated, estimated_counts = counted_patterns(session, "tp_pairs_compared", "sum(weight)")
    rate = candidate_match_rate(estimated, estimated_counts, m, u)
    all_pairs = max(n * (n - 1) // 2, 1)
    return rate, float(np.clip(rate * estimated_counts.sum() / all_pairs, 1e-9, 0.5))


def non_match_u(matrix, counts: np.ndarray, m, u, prior: float) -> dict[str, np.ndarray]:
    """estimate_u over random pairs, each counted as a non-match with the probability that m, u and the prior
    (the chance that two random records match) give it."""
    matching = 1.0 / (1.0 + np.power(2.0, -match_weights(matrix, m, u, prior)))
    return estimate_u(matrix, counts * (1.0 - matching))


def train(session, n: int) -> tuple[dict, dict, int, float, float]:
    """u from random pairs, m by EM, then u again without the random pairs the model takes for matches, and m
    once more with it. Returns m, u, EM iterations, the candidates' match rate and the prior.

    Why the second u: u is how often *non-matches* agree, and random pairs are almost all non-matches only when
    duplicates are rare. In a small file full of duplicates (FEBRL1: 1,000 records, 500 true pairs) most random
    pairs sharing a street are the same person, so the raw frequency overstates u for every agreement level, and
    understates the weight of agreeing, by up to several bits. Each random pair is counted as a non-match with
    the probability the first model gives it. One step, not iterated to a fixed point: a pattern the first
    model doubts (a household: other first name, other birth date) stays in u in proportion to that doubt, and
    the step cannot feed on its own output. At warehouse scale (100k customers: about 10 matches among the 1M
    sampled pairs) the correction is negligible; it matters for small files dense with duplicates.

    A consequence, measured (docs/identity_engine.md): in such a file, two records with the same name and
    street whose birth dates are a generation apart link when no other pair of different people there shares
    a name and a street, since nothing else in the data says a junior and a senior live together; FEBRL's
    duplicates with a replaced birth date are exactly that pattern."""
    temp_table(session, "tp_pairs_random", random_pairs(n))
    random_matrix, random_counts = patterns(session, "tp_pairs_random")
    u = estimate_u(random_matrix, random_counts)
    m, _ = train_m(session, u)
    _, prior = prior_and_rate(session, m, u, n)
    u = non_match_u(random_matrix, random_counts, m, u, prior)
    m, iterations = train_m(session, u)
    rate, prior = prior_and_rate(session, m, u, n)
    return m, u, iterations, rate, prior


class Estimates(NamedTuple):
    """What a pair's score depends on besides its two records; kept from the last full build (ESTIMATES_TABLE)."""

    m: dict[str, np.ndarray]
    u: dict[str, np.ndarray]
    iterations: int
    rate: float
    prior: float
    records: int  # person records when estimated: the denominator of the name frequencies


def definition_fingerprint() -> str:
    """A hash of everything that decides a pair's levels, candidacy and weights in code, and of the kept record
    states' form: estimates kept under another definition (a comparison or blocking rule changed) are estimated
    again, and every pair scored again."""
    parts = [
        COMPARISONS,
        COUNTED_ELSEWHERE,
        PRESENCE,
        TERM_FREQUENCY,
        BLOCKING_RULES,
        COMPARED,
        PEOPLE_SQL,
        ALIGNED_SQL,
        records_state_sql(),  # the kept record states' columns
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def key_check_sql() -> str:
    """The pseudonym of a fixed text: the name frequencies are keyed by pseudonym, so a new key invalidates them."""
    return hmac_sql("'touchpoint: name frequencies'")


def save_estimates(session, tables: dict[str, str], estimates: Estimates, as_of: str) -> None:
    """The estimates, one row per comparison level with the scalars repeated, and the name frequencies keyed by
    the value's pseudonym (no name in clear text in a table the erasure does not rebuild)."""
    rows = [
        (name, level, float(estimates.m[name][level]), float(estimates.u[name][level]))
        for name in COMPARISONS
        for level in range(LEVELS[name])
    ]
    temp_table(session, "tp_pairs_estimates", pd.DataFrame(rows, columns=["comparison", "level", "m", "u"]))
    session.execute(f"""
        create or replace table {tables["estimates"]} as
        select comparison, level::integer as level, m as m_probability, u as u_probability,
            {estimates.iterations}::integer as em_iterations, {estimates.rate!r}::double as em_match_rate,
            {estimates.prior!r}::double as prior_match_probability, {estimates.records}::bigint as records,
            {sql_literal(str(as_of)[:10])}::date as estimated_as_of,
            {sql_literal(definition_fingerprint())} as definition,
            {key_check_sql()} as key_check
        from tp_pairs_estimates""")
    names = " union all ".join(f"select {column} as value from tp_pairs_people" for column in TERM_FREQUENCY.values())
    session.execute(f"""
        create or replace table {tables["name_frequencies"]} as
        select {hmac_sql("value")} as value_key, records
        from (select value, count(*)::bigint as records from ({names}) where value is not null group by value)""")


def stored_estimates(session, tables: dict[str, str], as_of) -> Estimates | None:
    """The kept estimates, or None when there are none usable: none kept, another definition, another key, or
    made as of a later day than this run's (a run back in time uses nothing dated after its as-of date, and
    estimates counted over later records would be such a thing)."""
    if not all(relation_exists(session, tables["schema"], tables[f"{name}_identifier"]) for name in PAIR_SCORES_STATE):
        return None
    frame = session.execute(
        f"select *, key_check = {key_check_sql()} as same_key from {tables['estimates']} order by comparison, level"
    ).df()
    if frame.empty or not frame["same_key"].all() or (frame["definition"] != definition_fingerprint()).any():
        return None
    if str(frame["estimated_as_of"].max())[:10] > str(as_of)[:10]:
        return None
    by_name = {name: group.sort_values("level") for name, group in frame.groupby("comparison")}
    if {name: len(group) for name, group in by_name.items()} != LEVELS:
        return None
    first = frame.iloc[0]
    return Estimates(
        m={name: group["m_probability"].to_numpy(float) for name, group in by_name.items()},
        u={name: group["u_probability"].to_numpy(float) for name, group in by_name.items()},
        iterations=int(first["em_iterations"]),
        rate=float(first["em_match_rate"]),
        prior=float(first["prior_match_probability"]),
        records=int(first["records"]),
    )


def person_term_frequencies(session, estimates: Estimates, frequencies: str) -> None:
    """tp_pairs_person_tf: every person record's term-frequency adjustment per name comparison, for its own
    value: log2(u of the exact level / the share of records carrying the value in either name field when
    estimated). A pair that agrees exactly has the same value on both sides (the left record's after
    alignment), so the adjustment is looked up once per record and joined to the pairs by integer index. A value
    unseen when estimated counts as one record: as rare as a value could be then."""
    names = " union ".join(f"select {column} as value from tp_pairs_people" for column in TERM_FREQUENCY.values())
    session.execute(
        f"create or replace temp table tp_pairs_name_keys as "
        f"select value, {hmac_sql('value')} as value_key from ({names}) where value is not null"
    )
    columns = ", ".join(
        f"log2({float(estimates.u[name][1])!r} / (coalesce(f_{name}.records, 1) / "
        f"{estimates.records}::double)) as {name}_tf"
        for name in TERM_FREQUENCY
    )
    joins = "".join(
        f" left join tp_pairs_name_keys as k_{name} on p.{column} = k_{name}.value"
        f" left join {frequencies} as f_{name} on k_{name}.value_key = f_{name}.value_key"
        for name, column in TERM_FREQUENCY.items()
    )
    session.execute(
        f"create or replace temp table tp_pairs_person_tf as "
        f"select p.person_index, p.node_id, {columns} from tp_pairs_people as p{joins}"
    )


def records_state_sql() -> str:
    """Per person record: a hash of what its comparisons and blocking read, and per blocking rule the hash of its
    key (null without one). Kept as `<model>__records`; a daily build compares it with today's to find the
    records that changed and the blocks they were and are in. Hashes only: no value in clear text is kept."""
    columns = [f"hash({', '.join(COMPARED)}) as compared_hash"]
    for number, (_, keys, _, _) in enumerate(BLOCKING_RULES, 1):
        key = block_key_sql(keys)
        columns.append(f"case when {key} is not null then hash({key}) end as key_{number}")
    return f"select node_id, person_index, {', '.join(columns)} from tp_pairs_people"


def rule_numbers() -> range:
    return range(1, len(BLOCKING_RULES) + 1)


def block_members_sql(keys_of_rule: str) -> str:
    """Today's members of the blocks whose key hash `keys_of_rule` (a query with `{number}` for the rule number)
    gives, with the block's key and exact size: hashes select the records, the keys themselves group them, so a
    hash collision cannot merge two blocks."""
    selects = []
    for number, (_, keys, cap, _) in enumerate(BLOCKING_RULES, 1):
        key = block_key_sql(keys, "people.")
        selects.append(
            f"select {number} as rule, {cap} as cap, people.node_id, people.person_index, {key} as block_key, "
            f"count(*) over (partition by {key}) as block_size "
            f"from tp_pairs_records as state join tp_pairs_people as people using (node_id) "
            f"where state.key_{number} in ({keys_of_rule.format(number=number)})"
        )
    return " union all ".join(selects)


def affected_pairs(session, this: str, previous: str) -> None:
    """tp_pairs_changed (the records new, gone or changed since the last build) and tp_pairs_affected: the pairs
    whose candidacy or score a changed record can move. A block that holds a changed record, before or now, is
    touched; the pairs affected are
    - today's pairs of a touched block within its scoring cap (a record joined or left it, or changed in it);
    - the scored pairs whose two records shared a touched block before, while it was within its cap (a newcomer
      may have pushed it over, and the record that changed may have been one of them). Sizes before are
      counted by key hash: were two keys of one rule to share a 64-bit hash (about 1 in 10^9 a day at 1M
      customers), a block could look over its cap and a pair it no longer makes keep its row until the next
      full build.
    Any other pair shares only blocks nobody joined or left, between records that did not change, so its row
    stands as a rebuild would give it."""
    session.execute(f"""
        create or replace temp table tp_pairs_changed as
        select coalesce(now.node_id, before.node_id) as node_id
        from tp_pairs_records as now full join {previous} as before on now.node_id = before.node_id
        where now.compared_hash is distinct from before.compared_hash""")
    touched = " union all ".join(
        f"select {number} as rule, key_{number} as key from {state} "
        f"where key_{number} is not null and node_id in (select node_id from tp_pairs_changed)"
        for number in rule_numbers()
        for state in ("tp_pairs_records", previous)
    )
    session.execute(f"create or replace temp table tp_pairs_touched as select distinct rule, key from ({touched})")
    # the touched blocks that were within their cap before: only their pairs can have been candidates through them
    within_cap_before = " union all ".join(
        f"select {number} as rule, key_{number} as key from {previous} "
        f"where key_{number} in (select key from tp_pairs_touched where rule = {number}) "
        f"group by key_{number} having count(*) <= {cap}"
        for number, (_, _, cap, _) in enumerate(BLOCKING_RULES, 1)
    )
    session.execute(f"create or replace temp table tp_pairs_touched_before as {within_cap_before}")
    session.execute(
        "create or replace temp table tp_pairs_touched_members as "
        + block_members_sql("select key from tp_pairs_touched where rule = {number}")
    )
    session.execute(f"""
        create or replace temp table tp_pairs_affected as
        select l.node_id as left_node, r.node_id as right_node
        from tp_pairs_touched_members as l
        join tp_pairs_touched_members as r
            on l.rule = r.rule and l.block_key = r.block_key and l.node_id < r.node_id
        where l.block_size <= l.cap
        union
        select pairs.left_node, pairs.right_node
        from (
            select left_node, right_node from {this}
            where left_node in (select node_id from {previous} as state where {touched_before("state")})
        ) as pairs
        join {previous} as l on pairs.left_node = l.node_id
        join {previous} as r on pairs.right_node = r.node_id
        where {touched_before("l", shared_with="r")}""")


def touched_before(alias: str, shared_with: str | None = None) -> str:
    """`alias` (a row of the kept record states) was in a touched block within its cap; with `shared_with` (the
    other record of a pair), in one that both were in."""

    def in_block(number: int) -> str:
        touched = f"{alias}.key_{number} in (select key from tp_pairs_touched_before where rule = {number})"
        return f"({alias}.key_{number} = {shared_with}.key_{number} and {touched})" if shared_with else touched

    return " or ".join(in_block(number) for number in rule_numbers())


def rescored_candidates(session) -> None:
    """tp_pairs_candidates: the affected pairs that are candidates now, with the first rule that finds them:
    blocked_pairs_sql's `scored` condition (the same key, a block within the rule's scoring cap) checked on the
    pair's records, with the exact size of every block the pair shares."""
    shared = " union all ".join(
        f"select pairs.left_node, pairs.right_node, {number} as rule, state.key_{number} as key "
        f"from tp_pairs_affected as pairs "
        f"join tp_pairs_people as l on pairs.left_node = l.node_id "
        f"join tp_pairs_people as r on pairs.right_node = r.node_id "
        f"join tp_pairs_records as state on pairs.left_node = state.node_id "
        f"where {block_key_sql(keys, 'l.')} = {block_key_sql(keys, 'r.')}"
        for number, (_, keys, _, _) in enumerate(BLOCKING_RULES, 1)
    )
    session.execute(f"create or replace temp table tp_pairs_shared as {shared}")
    members = block_members_sql("select key from tp_pairs_shared where rule = {number}")
    session.execute(f"""
        create or replace temp table tp_pairs_candidates as
        select l.person_index as left_index, r.person_index as right_index, min(l.rule) as blocking_rule,
            true as scored
        from tp_pairs_shared as pairs
        join ({members}) as l on pairs.rule = l.rule and pairs.left_node = l.node_id
        join tp_pairs_people as r on pairs.right_node = r.node_id
        where l.block_size <= l.cap
        group by all""")


def update_records_state(session, previous: str) -> None:
    """The kept record states brought to today's: only the changed records' rows are rewritten."""
    session.execute(f"delete from {previous} where node_id in (select node_id from tp_pairs_changed)")
    session.execute(
        f"insert into {previous} select * exclude (person_index) from tp_pairs_records "
        "where node_id in (select node_id from tp_pairs_changed)"
    )


def state_tables(dbt) -> dict[str, str]:
    """The model's relation and the tables kept beside it, in its schema (touchpoint/kept_state.py)."""
    this = dbt.this
    quoted = f'"{this.database}"."{this.schema}"'
    return {
        "schema": this.schema,
        "this": f'{quoted}."{this.identifier}"',
        **{name: f'{quoted}."{kept_table(this.identifier, name)}"' for name in PAIR_SCORES_STATE},
        **{f"{name}_identifier": kept_table(this.identifier, name) for name in PAIR_SCORES_STATE},
    }


def model(dbt, session):
    # append: a daily build deletes the pairs it scores again itself (score_changed_pairs)
    dbt.config(materialized="incremental", incremental_strategy="append")
    keep_estimates = dbt.config.get("keep_estimates")
    as_of = run_as_of(dbt.config.get("as_of"))
    people = dbt.ref("int_person_records_unioned").sql_query()
    temp_table(session, "tp_name_codes", name_codes(session, people))
    # person_index follows node_id order, so `left_index < right_index` is `left_node < right_node`
    session.execute(f"create or replace temp table tp_pairs_people as {PEOPLE_SQL.format(people=people)}")
    session.execute(f"create or replace temp table tp_pairs_records as {records_state_sql()}")
    tables = state_tables(dbt)
    kept = None
    if dbt.is_incremental or str(keep_estimates).strip().lower() == "true":
        kept = stored_estimates(session, tables, as_of)
    if kept is not None and dbt.is_incremental:
        score_changed_pairs(session, tables)
    else:
        kept = score_every_pair(session, tables, kept, dbt.is_incremental, as_of)
    prepare_scoring(session, kept, tables["name_frequencies"])
    return score_pairs(session, kept)


def score_changed_pairs(session, tables: dict[str, str]) -> None:
    """A daily build: the affected pairs' rows deleted, the affected candidates compared (tp_pairs_compared),
    the record states brought to today's."""
    affected_pairs(session, tables["this"], tables["records"])
    session.execute(
        f"delete from {tables['this']} where (left_node, right_node) in "
        "(select (left_node, right_node) from tp_pairs_affected)"
    )
    rescored_candidates(session)
    compared = comparison_sql("tp_pairs_candidates", SCORED_COLUMNS)
    session.execute(f"create or replace temp table tp_pairs_compared as {compared}")
    update_records_state(session, tables["records"])


def score_every_pair(session, tables: dict[str, str], kept: Estimates | None, incremental: bool, as_of) -> Estimates:
    """A full build: every candidate compared (tp_pairs_compared), estimated again unless `kept` (the var
    identity_keep_estimates), the record states kept from scratch. Returns the estimates to score with."""
    if incremental:  # an incremental run without usable estimates: every pair is scored again
        session.execute(f"delete from {tables['this']}")
    if kept is None:
        n = session.execute("select count(*) from tp_pairs_people").fetchone()[0]
        kept = estimate_from_all_pairs(session, n)
        save_estimates(session, tables, kept, as_of)
    else:
        candidates = candidate_pairs_sql(list(rule_numbers()))
        compared = comparison_sql(f"(select * from ({candidates}) where scored)", SCORED_COLUMNS)
        session.execute(f"create or replace temp table tp_pairs_compared as {compared}")
    session.execute(
        f"create or replace table {tables['records']} as select * exclude (person_index) from tp_pairs_records"
    )
    return kept


def estimate_from_all_pairs(session, n: int) -> Estimates:
    """Every candidate pair compared (tp_pairs_compared, the estimation sample included), and the estimates
    trained on them."""
    candidates = candidate_pairs_sql(list(rule_numbers()))
    session.execute(
        "create or replace temp table tp_pairs_compared as "
        + comparison_sql(f"({candidates})", ("left_index", "right_index", "blocking_rule", "rules", "scored", "weight"))
    )
    m, u, iterations, rate, prior = train(session, n)
    return Estimates(m=m, u=u, iterations=iterations, rate=rate, prior=prior, records=n)


def prepare_scoring(session, estimates: Estimates, frequencies: str) -> None:
    """tp_pairs_pattern_weights (each comparison pattern's per-field weights) and tp_pairs_person_tf."""
    matrix, _ = counted_patterns(session, "(select * from tp_pairs_compared where scored)")
    weights = field_weights(matrix, estimates.m, estimates.u)
    temp_table(
        session,
        "tp_pairs_pattern_weights",
        pd.DataFrame({**matrix, **{f"{name}_weight": weights[name] for name in COMPARISONS}}),
    )
    person_term_frequencies(session, estimates, frequencies)


def score_pairs(session, estimates: Estimates):
    """Every candidate pair with its levels, per-field weights (term frequency included) and probability."""
    field_weight = {name: f"weights.{name}_weight" for name in COMPARISONS}
    for name in TERM_FREQUENCY:
        field_weight[name] = (
            f"(weights.{name}_weight + case when pairs.{name} = 1 then coalesce(l.{name}_tf, 0) else 0 end)"
        )
    total = " + ".join(field_weight.values())
    prior_weight = float(np.log2(estimates.prior / (1 - estimates.prior)))
    # ordered by the integer indices, which follow node_id order: the same order as by (left_node, right_node)
    return session.sql(f"""
        with scored as (
            select
                pairs.left_index,
                pairs.right_index,
                l.node_id as left_node,
                r.node_id as right_node,
                pairs.blocking_rule,
                {", ".join(f"pairs.{name}::integer as {name}" for name in COMPARISONS)},
                {", ".join(f"{expression} as {name}_weight" for name, expression in field_weight.items())},
                {prior_weight!r}::double + {total} as match_weight
            from (select * from tp_pairs_compared where scored) as pairs
            join tp_pairs_pattern_weights as weights using ({", ".join(COMPARISONS)})
            join tp_pairs_person_tf as l on pairs.left_index = l.person_index
            join tp_pairs_person_tf as r on pairs.right_index = r.person_index
        )
        select
            * exclude (left_index, right_index),
            1.0 / (1.0 + pow(2.0, -match_weight)) as match_probability,
            {estimates.iterations}::bigint as em_iterations,
            {estimates.rate!r}::double as em_match_rate,
            {estimates.prior!r}::double as prior_match_probability
        from scored
        order by left_index, right_index
    """)
