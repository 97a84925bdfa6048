"""Fellegi-Sunter scores for candidate pairs of person records (CRM contacts and shop customers).

Unsupervised: u-probabilities come from a fixed pseudo-random sample of record pairs (almost all non-matches),
m-probabilities and the match rate from expectation-maximisation over the blocked candidate pairs, as Splink
does. Blocking rules are equality joins, so the number of compared pairs grows with the block sizes, not
with n^2. Works with names, address and birth date alone: missing values (and email/phone) score zero.
The threshold that turns a score into a link is applied in int_identity_graph_resolved.

Why not Splink 5 itself (evaluated first; bench/identity.py runs it on the same records side by side):
with its library comparisons and its documented training steps it was clearly less accurate on the demo
data (default scale: precision 0.83 / recall 0.96 against 0.99+ / 0.99 here), its EM raised
"m_probability 0.0 is below the minimum" on the small demo, and it creates its own tables in the connection
it is given. What this data needs
(aligned first/last swaps, short forms of first names, street/postcode/city as one correlated comparison,
birth-date and first-name guardrails) would be custom SQL in Splink as well; the model itself (u by random
sampling, m by EM per blocking session, a global prior) is Splink's, in ~150 lines of numpy that run inside
this dbt Python model, deterministic for the same input.

Memory: candidate pairs never leave DuckDB. They are held as integer indices of the person records, EM runs
on the distinct comparison patterns with their pair counts (at most a few thousand, whatever the number of
pairs), and the scores are joined back by pattern in SQL, so DuckDB's memory_limit bounds the model
(1M customers: 5.1M candidate pairs).
"""

import numpy as np
import pandas as pd

# Candidate pairs: a pair is compared when it agrees on any of these (typos rarely hit two fields at once).
# Every key must get more distinct as the population grows, or its blocks (and the pairs, quadratically in
# block size) grow with it: first + last name alone gave 88% of the candidates at 100k customers and 38.6M
# pairs at 1M, so it is combined with city, email or phone (at 100k: 2 of its 3,141 otherwise unfound
# accepted links lost, candidates 443k -> 102k).
BLOCKING_RULES = [
    "l.birth_date = r.birth_date and l.postcode = r.postcode",
    "l.birth_date = r.birth_date and l.last_name_key = r.last_name_key",
    "l.birth_date = r.birth_date and l.first_name_key = r.first_name_key",
    "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key and l.city_key = r.city_key",
    "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key and l.email = r.email",
    "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key and l.phone_e164 = r.phone_e164",
    "l.postcode = r.postcode and l.address_key = r.address_key",
    "l.last_name_key = r.last_name_key and l.postcode = r.postcode",
    "l.first_name_key = r.last_name_key and l.last_name_key = r.first_name_key",
    "l.address_key = r.address_key and l.city_key = r.city_key",
]

# Comparison -> number of levels (level -1 = a value is missing, contributes nothing).
LEVELS = {
    # 0 different, 1 jaro-winkler >= 0.88, 2 >= 0.92 or same full form (Bob = Robert), 3 equal
    "first_name": 4,
    "last_name": 4,
    "birth_date": 3,  # 0 conflict, 1 one keystroke or day/month swapped, 2 equal
    # street, postcode and city are one comparison: they are strongly correlated (a household shares all
    # three), and scoring them as independent would count one shared address three times.
    "location": 5,  # 0 different, 1 same city, 2 same postcode, 3 similar street (jw >= 0.88), 4 same street
    "email": 2,
    "phone": 2,
}

COMPARISON_SQL = """
with aligned as (
    select
        pairs.*,
        l.first_name_key as l_first, l.last_name_key as l_last,
        l.first_name_canonical as l_first_canonical,
        case when l.first_name_key = r.last_name_key and l.last_name_key = r.first_name_key
                  and l.first_name_key <> l.last_name_key
             then r.last_name_key else r.first_name_canonical end as r_first_canonical,
        -- first and last name written the wrong way round count as agreeing names
        case when l.first_name_key = r.last_name_key and l.last_name_key = r.first_name_key
                  and l.first_name_key <> l.last_name_key
             then r.last_name_key else r.first_name_key end as r_first,
        case when l.first_name_key = r.last_name_key and l.last_name_key = r.first_name_key
                  and l.first_name_key <> l.last_name_key
             then r.first_name_key else r.last_name_key end as r_last,
        l.birth_date as l_birth, r.birth_date as r_birth,
        l.address_key as l_address, r.address_key as r_address,
        l.postcode as l_postcode, r.postcode as r_postcode,
        l.city_key as l_city, r.city_key as r_city,
        l.email as l_email, r.email as r_email,
        l.phone_e164 as l_phone, r.phone_e164 as r_phone
    from {pairs} as pairs
    join tp_pairs_people as l on pairs.left_index = l.person_index
    join tp_pairs_people as r on pairs.right_index = r.person_index
)
select
    * exclude (l_first, l_last, r_first, r_last, l_first_canonical, r_first_canonical, l_birth, r_birth,
               l_address, r_address, l_postcode, r_postcode,
               l_city, r_city, l_email, r_email, l_phone, r_phone),
    case when l_first is null or r_first is null then -1 when l_first = r_first then 3
         when jaro_winkler_similarity(l_first, r_first) >= 0.92
              or l_first_canonical = r_first_canonical then 2
         when jaro_winkler_similarity(l_first, r_first) >= 0.88 then 1 else 0 end as first_name,
    case when l_last is null or r_last is null then -1 when l_last = r_last then 3
         when jaro_winkler_similarity(l_last, r_last) >= 0.92 then 2
         when jaro_winkler_similarity(l_last, r_last) >= 0.88 then 1 else 0 end as last_name,
    case when l_birth is null or r_birth is null then -1 when l_birth = r_birth then 2
         when damerau_levenshtein(strftime(l_birth, '%Y%m%d'), strftime(r_birth, '%Y%m%d')) <= 1
              or (year(l_birth) = year(r_birth) and month(l_birth) = day(r_birth)
                  and day(l_birth) = month(r_birth)) then 1
         else 0 end as birth_date,
    case when coalesce(l_address, l_postcode, l_city) is null
              or coalesce(r_address, r_postcode, r_city) is null
              then -1
         when l_address = r_address and (l_postcode = r_postcode or l_postcode is null or r_postcode is null)
              then 4
         when jaro_winkler_similarity(l_address, r_address) >= 0.88
              and (l_postcode = r_postcode or l_postcode is null or r_postcode is null) then 3
         when l_postcode = r_postcode then 2
         when l_city = r_city or jaro_winkler_similarity(l_city, r_city) >= 0.9 then 1
         else 0 end as location,
    case when l_email is null or r_email is null then -1 when l_email = r_email then 1 else 0 end as email,
    case when l_phone is null or r_phone is null then -1 when l_phone = r_phone then 1 else 0 end as phone,
    -- guardrail, not evidence: first names that cannot be one person's (short forms and swaps allowed)
    coalesce(l_first is not null and r_first is not null and l_first_canonical <> r_first_canonical
        and jaro_winkler_similarity(l_first, r_first) < 0.7
        and jaro_winkler_similarity(l_first_canonical, r_first_canonical) < 0.7, false)
        as is_first_name_conflict
from aligned
"""

# Starting m-probabilities (and the values used when there are too few pairs for EM): mass on agreement.
PRIOR_M = {
    "first_name": [0.03, 0.04, 0.08, 0.85],
    "last_name": [0.03, 0.04, 0.08, 0.85],
    "birth_date": [0.02, 0.08, 0.90],
    "location": [0.05, 0.05, 0.10, 0.10, 0.70],
    "email": [0.30, 0.70],
    "phone": [0.30, 0.70],
}
# EM sessions as in Splink: each blocks on some fields and estimates m only for the others, since pairs that
# agree on the blocked fields by construction say nothing about how often matches agree on them. Every
# comparison is estimated in at least one session, and every session's blocks stay small as the population
# grows (birth date alone, or first + last name alone, would give tens of millions of pairs at 1M customers).
TRAINING_SESSIONS = [
    ("l.birth_date = r.birth_date and l.first_name_key = r.first_name_key", {"birth_date", "first_name"}),
    ("l.birth_date = r.birth_date and l.last_name_key = r.last_name_key", {"birth_date", "last_name"}),
    (
        "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key and l.city_key = r.city_key",
        {"first_name", "last_name", "location"},
    ),
]
MIN_PAIRS_FOR_EM = 50
U_SAMPLE_PAIRS = 300_000
SEED = 20260331


def candidate_pairs_sql(rules: list[str]) -> str:
    """Distinct pairs (left before right) agreeing on any rule, with the first rule that found them."""
    selects = [
        f"select l.person_index as left_index, r.person_index as right_index, {number} as blocking_rule "
        f"from tp_pairs_people as l join tp_pairs_people as r on {rule} and l.person_index < r.person_index"
        for number, rule in enumerate(rules, start=1)
    ]
    return (
        "select left_index, right_index, min(blocking_rule) as blocking_rule from ("
        + " union all ".join(selects)
        + ") group by all"
    )


def random_pairs(n: int) -> pd.DataFrame:
    """A fixed pseudo-random sample of pairs of distinct records, to estimate how often non-matches agree."""
    if n < 2:
        return pd.DataFrame({"left_index": [], "right_index": []}, dtype="int64")
    rng = np.random.default_rng(SEED)
    size = min(U_SAMPLE_PAIRS, n * (n - 1) // 2)
    left = rng.integers(0, n, size)
    right = rng.integers(0, n, size)
    keep = left != right
    return pd.DataFrame({"left_index": left[keep], "right_index": right[keep]})


def counted_patterns(session, compared: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The distinct comparison vectors in `compared` (a table or query with the LEVELS columns) and how many
    pairs have each."""
    levels = ", ".join(LEVELS)
    rows = session.execute(f"select {levels}, count(*) as pairs from {compared} group by all order by all").fetchnumpy()
    return {name: rows[name].astype(np.int64) for name in LEVELS}, rows["pairs"].astype(float)


def patterns(session, pairs: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """counted_patterns of `pairs` (a table or subquery of left_index, right_index) once compared."""
    return counted_patterns(session, f"({COMPARISON_SQL.format(pairs=pairs)})")


def estimate_u(matrix: dict[str, np.ndarray], counts: np.ndarray) -> dict[str, np.ndarray]:
    """Level frequencies among random pairs, with add-one smoothing so no level has u = 0."""
    u = {}
    for name, levels in LEVELS.items():
        observed = matrix[name] >= 0
        frequency = np.bincount(matrix[name][observed], weights=counts[observed], minlength=levels)
        u[name] = (frequency[:levels] + 1.0) / (frequency[:levels] + 1.0).sum()
    return u


def expectation_maximisation(
    matrix: dict[str, np.ndarray],
    counts: np.ndarray,
    u: dict[str, np.ndarray],
    fixed: set[str],
    max_iterations: int = 100,
):
    """m-probabilities of the comparisons not in `fixed`, u held fixed, over patterns weighted by their pair
    counts; same input, same output. Returns None when there are too few pairs to learn from."""
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


def match_weights(matrix, m, u, rate) -> np.ndarray:
    """log2 Bayes factor of each comparison vector plus the prior log-odds of a match."""
    size = len(next(iter(matrix.values())))
    weights = np.full(size, np.log2(rate / (1 - rate)))
    for name in matrix:
        levels = matrix[name]
        factor = np.log2(m[name] / u[name])
        observed = levels >= 0
        weights[observed] += factor[levels[observed]]
    return weights


def model(dbt, session):
    dbt.config(materialized="table")
    people = dbt.ref("int_person_records_unioned")
    # person_index follows node_id order, so `left_index < right_index` is `left_node < right_node`
    session.execute(
        "create or replace temp table tp_pairs_people as select "
        f"(row_number() over (order by node_id) - 1)::integer as person_index, * from ({people.sql_query()})"
    )
    n = session.execute("select count(*) from tp_pairs_people").fetchone()[0]
    levels = ", ".join(f"{name}::tinyint as {name}" for name in LEVELS)
    session.execute(
        f"create or replace temp table tp_pairs_compared as select left_index, right_index, blocking_rule, "
        f"{levels}, is_first_name_conflict "
        f"from ({COMPARISON_SQL.format(pairs='(' + candidate_pairs_sql(BLOCKING_RULES) + ')')})"
    )
    session.register("tp_pairs_random", random_pairs(n))
    try:
        u = estimate_u(*patterns(session, "tp_pairs_random"))
    finally:
        session.unregister("tp_pairs_random")
    estimates = {name: [] for name in LEVELS}
    iterations = 0
    for rule, fixed in TRAINING_SESSIONS:
        session_m, session_iterations = expectation_maximisation(
            *patterns(session, f"({candidate_pairs_sql([rule])})"), u, fixed
        )
        iterations = max(iterations, session_iterations)
        for name, values in (session_m or {}).items():
            estimates[name].append(values)

    m = {
        name: np.mean(found, axis=0) if found else np.array(PRIOR_M[name], dtype=float)
        for name, found in estimates.items()
    }
    matrix, counts = counted_patterns(session, "tp_pairs_compared")
    rate = candidate_match_rate(matrix, counts, m, u)
    # Score with the prior of two random records matching (Splink's probability_two_random_records_match):
    # the matches expected among the candidates spread over all pairs. The in-candidate rate would overstate
    # the prior of every pair that only agrees on its blocked fields.
    all_pairs = max(n * (n - 1) // 2, 1)
    prior = float(np.clip(rate * counts.sum() / all_pairs, 1e-9, 0.5))
    weights = match_weights(matrix, m, u, prior) if len(counts) else np.array([])
    session.register(
        "tp_pairs_pattern_scores",
        pd.DataFrame({**matrix, "match_weight": weights, "match_probability": 1.0 / (1.0 + np.power(2.0, -weights))}),
    )
    session.execute("create or replace temp table tp_pairs_scores as select * from tp_pairs_pattern_scores")
    session.unregister("tp_pairs_pattern_scores")
    # The scores are a function of the comparison vector: joined back by it, so the pairs stay in DuckDB.
    return session.sql(f"""
        select
            l.node_id as left_node,
            r.node_id as right_node,
            pairs.blocking_rule,
            {", ".join(f"pairs.{name}::integer as {name}" for name in LEVELS)},
            scores.match_weight,
            scores.match_probability,
            pairs.birth_date = 0 as is_birth_date_conflict,
            pairs.is_first_name_conflict,
            {iterations}::bigint as em_iterations,
            {rate!r}::double as em_match_rate,
            {prior!r}::double as prior_match_probability
        from tp_pairs_compared as pairs
        join tp_pairs_scores as scores using ({", ".join(LEVELS)})
        join tp_pairs_people as l on pairs.left_index = l.person_index
        join tp_pairs_people as r on pairs.right_index = r.person_index
        order by left_node, right_node
    """)
