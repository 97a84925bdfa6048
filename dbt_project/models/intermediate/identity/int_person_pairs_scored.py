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
"""

import numpy as np
import pandas as pd

# Candidate pairs: a pair is compared when it agrees on any of these (typos rarely hit two fields at once).
BLOCKING_RULES = [
    "l.birth_date = r.birth_date and l.postcode = r.postcode",
    "l.birth_date = r.birth_date and l.last_name_key = r.last_name_key",
    "l.birth_date = r.birth_date and l.first_name_key = r.first_name_key",
    "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key",
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
    join people as l on pairs.left_node = l.node_id
    join people as r on pairs.right_node = r.node_id
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
# agree on the blocked fields by construction say nothing about how often matches agree on them.
TRAINING_SESSIONS = [
    (
        "l.first_name_key = r.first_name_key and l.last_name_key = r.last_name_key",
        {"first_name", "last_name"},
    ),
    ("l.birth_date = r.birth_date", {"birth_date"}),
]
MIN_PAIRS_FOR_EM = 50
U_SAMPLE_PAIRS = 300_000
SEED = 20260331


def candidate_pairs(session, rules: list[str]) -> pd.DataFrame:
    selects = [
        f"select l.node_id as left_node, r.node_id as right_node, {number} as blocking_rule "
        f"from people as l join people as r on {rule} and l.node_id < r.node_id"
        for number, rule in enumerate(rules, start=1)
    ]
    sql = (
        "select left_node, right_node, min(blocking_rule) as blocking_rule from ("
        + " union all ".join(selects)
        + ") group by all"
    )
    return session.execute(sql).df()


def random_pairs(node_ids: np.ndarray) -> pd.DataFrame:
    """A fixed pseudo-random sample of distinct pairs, to estimate how often non-matches agree."""
    n = len(node_ids)
    if n < 2:
        return pd.DataFrame({"left_node": [], "right_node": []}, dtype=object)
    rng = np.random.default_rng(SEED)
    size = min(U_SAMPLE_PAIRS, n * (n - 1) // 2)
    left = rng.integers(0, n, size)
    right = rng.integers(0, n, size)
    keep = left != right
    return pd.DataFrame({"left_node": node_ids[left[keep]], "right_node": node_ids[right[keep]]})


def compare(session, pairs: pd.DataFrame) -> pd.DataFrame:
    session.register("tp_pairs", pairs)
    try:
        return session.execute(COMPARISON_SQL.format(pairs="tp_pairs")).df()
    finally:
        session.unregister("tp_pairs")


def estimate_u(gammas: pd.DataFrame) -> dict[str, np.ndarray]:
    """Level frequencies among random pairs, with add-one smoothing so no level has u = 0."""
    u = {}
    for name, levels in LEVELS.items():
        observed = gammas[name].to_numpy() if len(gammas) else np.array([], dtype=int)
        observed = observed[observed >= 0]
        counts = np.bincount(observed, minlength=levels)[:levels].astype(float) + 1.0
        u[name] = counts / counts.sum()
    return u


def expectation_maximisation(
    gammas: pd.DataFrame, u: dict[str, np.ndarray], fixed: set[str], max_iterations: int = 100
):
    """m-probabilities of the comparisons not in `fixed`, u held fixed; same input, same output.
    Returns None when there are too few pairs to learn from."""
    free = [name for name in LEVELS if name not in fixed]
    m = {name: np.array(PRIOR_M[name], dtype=float) for name in free}
    if len(gammas) < MIN_PAIRS_FOR_EM:
        return None, 0
    matrix = {name: gammas[name].to_numpy() for name in free}
    rate = 0.5
    for iteration in range(1, max_iterations + 1):  # noqa: B007 (returned)
        probability = 1.0 / (1.0 + np.power(2.0, -match_weights(matrix, m, u, rate)))
        new_m = {}
        for name in free:
            observed = matrix[name] >= 0
            mass = np.bincount(matrix[name][observed], weights=probability[observed], minlength=LEVELS[name])
            # one pseudo-pair per level: no level is ever impossible for a match
            mass = mass[: LEVELS[name]] + 1.0
            new_m[name] = mass / mass.sum()
        new_rate = float(np.clip(probability.mean(), 1e-6, 1 - 1e-6))
        change = max(max(np.abs(new_m[k] - m[k]).max() for k in free), abs(new_rate - rate))
        m, rate = new_m, new_rate
        if change < 1e-6:
            break
    return m, iteration


def candidate_match_rate(gammas: pd.DataFrame, m, u, max_iterations: int = 200) -> float:
    """Share of candidate pairs that match, by EM on the rate alone with m and u fixed."""
    if len(gammas) == 0:
        return 0.0
    matrix = {name: gammas[name].to_numpy() for name in LEVELS}
    rate = 0.5
    for _ in range(max_iterations):
        new_rate = float(
            np.clip((1.0 / (1.0 + np.power(2.0, -match_weights(matrix, m, u, rate)))).mean(), 1e-9, 1 - 1e-9)
        )
        if abs(new_rate - rate) < 1e-9:
            break
        rate = new_rate
    return rate


def match_weights(matrix, m, u, rate) -> np.ndarray:
    """log2 Bayes factor of each pair plus the prior log-odds of a match."""
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
    people = dbt.ref("int_person_records_unioned").df()
    session.register("people", people)
    try:
        gammas = compare(session, candidate_pairs(session, BLOCKING_RULES))
        node_ids = np.sort(people["node_id"].to_numpy(dtype=object))
        u = estimate_u(compare(session, random_pairs(node_ids)))
        estimates = {name: [] for name in LEVELS}
        iterations = 0
        for rule, fixed in TRAINING_SESSIONS:
            session_m, session_iterations = expectation_maximisation(
                compare(session, candidate_pairs(session, [rule])), u, fixed
            )
            iterations = max(iterations, session_iterations)
            for name, values in (session_m or {}).items():
                estimates[name].append(values)
    finally:
        session.unregister("people")

    m = {
        name: np.mean(found, axis=0) if found else np.array(PRIOR_M[name], dtype=float)
        for name, found in estimates.items()
    }
    rate = candidate_match_rate(gammas, m, u)
    # Score with the prior of two random records matching (Splink's probability_two_random_records_match):
    # the matches expected among the candidates spread over all pairs. The in-candidate rate would overstate
    # the prior of every pair that only agrees on its blocked fields.
    n = len(people)
    all_pairs = max(n * (n - 1) // 2, 1)
    prior = float(np.clip(rate * len(gammas) / all_pairs, 1e-9, 0.5))
    matrix = {name: gammas[name].to_numpy() for name in LEVELS}
    weights = match_weights(matrix, m, u, prior) if len(gammas) else np.array([])
    scored = gammas.assign(
        match_weight=weights,
        match_probability=1.0 / (1.0 + np.power(2.0, -weights)),
        is_birth_date_conflict=gammas["birth_date"].to_numpy() == 0,
        em_iterations=iterations,
        em_match_rate=rate,
        prior_match_probability=prior,
    )
    columns = [
        "left_node",
        "right_node",
        "blocking_rule",
        *LEVELS,
        "match_weight",
        "match_probability",
        "is_birth_date_conflict",
        "is_first_name_conflict",
        "em_iterations",
        "em_match_rate",
        "prior_match_probability",
    ]
    return scored[columns].sort_values(["left_node", "right_node"]).reset_index(drop=True)
