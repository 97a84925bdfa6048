"""The numeric cores of the two identity Python models, tested directly (their dbt runs are in test_identity.py):
EM over distinct comparison patterns with counts must equal EM over every pair, and the maximum cluster size
guardrail must relax probabilistic edges before shared-identifier edges and never touch the others."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

IDENTITY_MODELS = Path(__file__).resolve().parent.parent / "dbt_project" / "models" / "intermediate" / "identity"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, IDENTITY_MODELS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scoring = load("int_person_pairs_scored")
graph = load("int_identity_graph_resolved")


def random_comparisons(pairs: int, seed: int) -> dict[str, np.ndarray]:
    """Comparison vectors of a mix of matches (mostly agreeing) and non-matches (mostly not), -1 = missing."""
    rng = np.random.default_rng(seed)
    is_match = rng.random(pairs) < 0.3
    matrix = {}
    for name, levels in scoring.LEVELS.items():
        agree = np.where(rng.random(pairs) < 0.8, 1, 2)  # level 1 is exact agreement, 2 the next closest
        disagree = rng.integers(0, levels, pairs)
        values = np.where(is_match, agree, disagree)
        matrix[name] = np.where(rng.random(pairs) < 0.1, -1, values).astype(np.int64)
    return matrix


def em_over_every_pair(matrix, u, fixed, max_iterations=100):
    """The textbook loop, one row per pair: the reference the pattern version must reproduce."""
    free = [name for name in scoring.LEVELS if name not in fixed]
    m = {name: np.array(scoring.PRIOR_M[name], dtype=float) for name in free}
    rate = 0.5
    for _ in range(max_iterations):
        probability = 1.0 / (1.0 + np.power(2.0, -scoring.match_weights({k: matrix[k] for k in free}, m, u, rate)))
        new_m = {}
        for name in free:
            observed = matrix[name] >= 0
            mass = np.bincount(matrix[name][observed], weights=probability[observed], minlength=scoring.LEVELS[name])
            new_m[name] = (mass[: scoring.LEVELS[name]] + 1.0) / (mass[: scoring.LEVELS[name]] + 1.0).sum()
        new_rate = float(np.clip(probability.mean(), 1e-6, 1 - 1e-6))
        change = max(max(np.abs(new_m[k] - m[k]).max() for k in free), abs(new_rate - rate))
        m, rate = new_m, new_rate
        if change < 1e-6:
            break
    return m


def as_patterns(matrix: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    stacked = np.stack([matrix[name] for name in scoring.LEVELS], axis=1)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return {name: unique[:, i] for i, name in enumerate(scoring.LEVELS)}, counts.astype(float)


@pytest.mark.parametrize("fixed", [set(), {"first_name", "last_name"}, {"birth_date"}])
def test_em_over_patterns_equals_em_over_every_pair(fixed):
    pairs = random_comparisons(50_000, seed=3)
    patterns, counts = as_patterns(pairs)
    # the point: at most prod(levels + 1) patterns (one extra for missing), whatever the number of pairs
    assert len(counts) <= np.prod([levels + 1 for levels in scoring.LEVELS.values()]) < 50_000
    u = scoring.estimate_u(*as_patterns(random_comparisons(5_000, seed=4)))

    m, iterations = scoring.expectation_maximisation(patterns, counts, u, fixed)
    reference = em_over_every_pair(pairs, u, fixed)

    assert iterations > 1
    assert set(m) == set(reference) == set(scoring.LEVELS) - fixed
    for name in m:
        np.testing.assert_allclose(m[name], reference[name], rtol=1e-9, atol=1e-12)
    # matches mostly agree, so EM puts the m mass on the top level
    assert all(m[name].argmax() == 1 for name in m)


def test_u_counts_every_pair_of_a_pattern():
    patterns = {name: np.array([0, levels - 1]) for name, levels in scoring.LEVELS.items()}
    u = scoring.estimate_u(patterns, np.array([99.0, 1.0]))
    for name, levels in scoring.LEVELS.items():
        expected = scoring.U_PSEUDO_PAIRS * scoring.prior_u(levels)
        expected[0] += 99
        expected[-1] += 1
        np.testing.assert_allclose(u[name], expected / expected.sum())
        assert (u[name] > 0).all()


def test_too_few_pairs_leave_the_priors():
    patterns, counts = as_patterns(random_comparisons(10, seed=5))
    u = scoring.estimate_u(patterns, counts)
    assert scoring.expectation_maximisation(patterns, counts, u, set()) == (None, 0)


def test_pattern_weights_add_prior_and_factors():
    m = {"first_name": np.array([0.1, 0.1, 0.1, 0.7])}
    u = {"first_name": np.array([0.7, 0.1, 0.1, 0.1])}
    weights = scoring.match_weights({"first_name": np.array([3, 0, -1])}, m, u, 0.5)
    np.testing.assert_allclose(weights, [np.log2(7), np.log2(1 / 7), 0.0])


def test_oversized_component_loses_probabilistic_edges_first():
    # nodes 0..11 are person records, 12 is a shared email; 0..5 and 6..11 are two chains of probabilistic
    # links, joined only through the email (owned by 5 and 6): 12 records in one component, over the limit 10
    left, right, rule = [], [], []
    for start in (0, 6):
        for node in range(start, start + 5):
            left.append(node), right.append(node + 1), rule.append(1)
    left += [5, 6]
    right += [12, 12]
    rule += [2, 2]
    is_person = np.array([True] * 12 + [False])
    labels, dropped = graph.resolve(
        is_person,
        np.array(left),
        np.array(right),
        np.ones(len(left), dtype=bool),
        np.array(rule, dtype=np.int8),
        max_cluster=10,
    )
    # round 1 removes every probabilistic edge of the oversized component, leaving {5, 6, email} together
    assert dropped.tolist() == [True] * 10 + [False, False]
    assert labels[5] == labels[6] == labels[12]
    assert len(set(labels[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]])) == 10


def test_shared_identifier_edges_go_when_probabilistic_ones_are_not_enough():
    # 11 person records all holding one phone (node 11): no probabilistic edge to relax
    left = np.arange(11)
    right = np.full(11, 11)
    is_person = np.array([True] * 11 + [False])
    labels, dropped = graph.resolve(
        is_person, left, right, np.ones(11, dtype=bool), np.full(11, 2, dtype=np.int8), max_cluster=10
    )
    assert dropped.all()
    assert len(set(labels)) == 12


def test_edges_of_other_rules_and_inactive_edges_are_kept_as_they_are():
    # an anonymous-id login chain (class 0) of 12 records is over the limit but is never relaxed;
    # an already blocked edge stays out of the graph and is not reported as dropped
    left = np.array([*range(11), 0])
    right = np.array([*range(1, 12), 12])
    active = np.array([True] * 11 + [False])
    is_person = np.array([True] * 13)
    labels, dropped = graph.resolve(is_person, left, right, active, np.zeros(12, dtype=np.int8), max_cluster=10)
    assert not dropped.any()
    assert len(set(labels[:12])) == 1
    assert labels[12] != labels[0]


def known_m_and_u(rng: np.random.Generator, u_differ: float) -> tuple[dict, dict]:
    """A true u per comparison (mass `u_differ` on 'different' against 1 per other level) and a true m
    (mostly exact agreement)."""
    true_u = {name: rng.dirichlet(np.r_[u_differ, np.ones(levels - 1)]) for name, levels in scoring.LEVELS.items()}
    true_m = {name: rng.dirichlet(np.r_[1.0, 25.0, np.ones(levels - 2)]) for name, levels in scoring.LEVELS.items()}
    return true_m, true_u


def draw(rng: np.random.Generator, probabilities: dict[str, np.ndarray], pairs: int) -> dict[str, np.ndarray]:
    """`pairs` comparison vectors with each comparison's level drawn from `probabilities`."""
    return {name: rng.choice(len(p), size=pairs, p=p).astype(np.int64) for name, p in probabilities.items()}


def test_m_and_u_are_learned_from_unlabelled_pairs():
    """Pairs drawn from known m (matches) and u (non-matches): random pairs give u back, EM over the blocked
    pairs gives m back, without labels."""
    rng = np.random.default_rng(11)
    names = list(scoring.LEVELS)
    true_m, true_u = known_m_and_u(rng, u_differ=20.0)
    u = scoring.estimate_u(*as_patterns(draw(rng, true_u, 400_000)))
    for name in names:
        np.testing.assert_allclose(u[name], true_u[name], atol=0.005)
    matches, non_matches = draw(rng, true_m, 20_000), draw(rng, true_u, 60_000)
    blocked = {name: np.concatenate([matches[name], non_matches[name]]) for name in names}
    m, _ = scoring.expectation_maximisation(*as_patterns(blocked), u, fixed=set())
    for name in names:
        np.testing.assert_allclose(m[name], true_m[name], atol=0.03)
        # disagreement is a learned level too, not a veto: its weight is finite and negative
        assert -20 < np.log2(m[name][0] / u[name][0]) < 0


def test_u_counts_only_the_random_pairs_that_do_not_match():
    """In a small file full of duplicates, random pairs include matches: their raw agreement rate overstates u.
    Weighted by the model's non-match probability, u comes back close to the non-matches' own rate."""
    rng = np.random.default_rng(5)
    names = list(scoring.LEVELS)
    true_m, true_u = known_m_and_u(rng, u_differ=50.0)
    matches, non_matches = draw(rng, true_m, 6_000), draw(rng, true_u, 194_000)  # 3% of random pairs match
    random = as_patterns({name: np.concatenate([matches[name], non_matches[name]]) for name in names})
    raw = scoring.estimate_u(*random)
    corrected = scoring.non_match_u(*random, true_m, raw, prior=0.03)
    for name in names:
        exact_raw, exact_corrected, exact_true = raw[name][1], corrected[name][1], true_u[name][1]
        assert exact_raw > 1.5 * exact_true  # the matches' agreement inflates the raw estimate
        assert abs(exact_corrected - exact_true) < 0.2 * exact_true
    # with no matches among the random pairs the correction changes (almost) nothing
    clean = as_patterns(draw(rng, true_u, 200_000))
    clean_u = scoring.estimate_u(*clean)
    for name in names:
        np.testing.assert_allclose(scoring.non_match_u(*clean, true_m, clean_u, prior=1e-5)[name], clean_u[name],
                                   atol=2e-4)


def test_a_chain_is_split_at_its_weakest_link():
    """A-B and B-C link, A and C are judged clearly different: the weaker of the two links goes, nothing else."""
    left, right = np.array([0, 1, 3]), np.array([1, 2, 4])
    strength = np.array([9.0, 4.0, 1.0])  # A-B strong, B-C weak, D-E elsewhere weak and untouched
    active = np.ones(3, dtype=bool)
    split = graph.split_clusters(5, left, right, active, strength, np.array([0]), np.array([2]))
    assert split.tolist() == [False, True, False]
    # no cannot-link pair inside a component: nothing is cut
    assert not graph.split_clusters(5, left, right, active, strength, np.array([0]), np.array([3])).any()


def test_overrides_are_read_as_node_pairs(tmp_path):
    path = tmp_path / "overrides.csv"
    path.write_text(
        "left_record,right_record,decision,reason\n"
        "crm_contacts:C-1,shop_customers:S-9,never_link,twins\n"
        "crm_contacts:C-2,crm_contacts:C-3,always_link,\n"
    )
    frame = graph.read_overrides(str(path))
    assert frame.values.tolist() == [
        ["crm:C-1", "customer:S-9", "never_link", "twins"],
        ["crm:C-2", "crm:C-3", "always_link", ""],
    ]
    assert graph.read_overrides(str(tmp_path / "absent.csv")).empty
    path.write_text("left_record,right_record,decision\nweb_events:W-1,crm_contacts:C-1,never_link\n")
    with pytest.raises(ValueError, match="web_events:W-1"):
        graph.read_overrides(str(path))
    path.write_text("left_record,right_record,decision\ncrm_contacts:C-1,crm_contacts:C-2,merge\n")
    with pytest.raises(ValueError, match="always_link or never_link"):
        graph.read_overrides(str(path))
