"""Segments: k by silhouette, algorithm comparison recorded, readable names, ids stable across runs."""

from __future__ import annotations

import json
from datetime import date, datetime

import duckdb
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from touchpoint.ml import segments
from touchpoint.ml.model_runs import ModelRun, write_model_runs

AS_OF = date(2026, 6, 30)
TRAINED_AT = datetime(2026, 7, 1)


def behaviour_groups(seed: int = 0, per_group: int = 120) -> pd.DataFrame:
    """Three clearly different groups: high-value loyal, lapsed one-timers, new small-basket buyers."""
    rng = np.random.default_rng(seed)

    def group(prefix: str, recency: float, frequency: float, aov: float, tenure: float) -> pd.DataFrame:
        n = per_group
        freq = np.maximum(1, rng.poisson(frequency, n)).astype(float)
        order_value = rng.lognormal(np.log(aov), 0.15, n)
        return pd.DataFrame(
            {
                "person_id": [f"{prefix}{i:04d}" for i in range(n)],
                "recency_days": rng.lognormal(np.log(recency), 0.2, n),
                "frequency": freq,
                "monetary": freq * order_value,
                "avg_order_value": order_value,
                "tenure_days": rng.lognormal(np.log(tenure), 0.15, n),
                "web_sessions": rng.poisson(5, n).astype(float),
                "email_open_rate": rng.uniform(0.2, 0.3, n),
                "email_click_rate": rng.uniform(0.05, 0.1, n),
                "online_share": rng.uniform(0.4, 0.6, n),
                "preferred_category": rng.choice(["home", "apparel"], n),
            }
        )

    frame = pd.concat(
        [
            group("hv", recency=10, frequency=25, aov=120, tenure=700),
            group("lp", recency=400, frequency=1, aov=40, tenure=600),
            group("nw", recency=8, frequency=1, aov=12, tenure=15),
        ],
        ignore_index=True,
    )
    return frame.sort_values("person_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def first_run() -> tuple[pd.DataFrame, segments.SegmentOutcome]:
    frame = behaviour_groups()
    with threadpool_limits(1):
        return frame, segments.fit_segments(frame, AS_OF, TRAINED_AT)


def test_k_is_chosen_by_silhouette_and_curves_are_recorded(first_run) -> None:
    frame, outcome = first_run
    metrics = outcome.run.metrics
    assert outcome.run.parameters["k"] == 3
    assert set(metrics["silhouette"]) == set(segments.K_RANGE) == set(metrics["elbow_inertia"])
    assert max(metrics["silhouette"], key=metrics["silhouette"].get) == 3
    inertia = [metrics["elbow_inertia"][k] for k in sorted(metrics["elbow_inertia"])]
    assert inertia == sorted(inertia, reverse=True)
    assert set(metrics["silhouette_by_algorithm"]) == {"kmeans", "gaussian_mixture", "agglomerative_ward"}
    assert metrics["chosen_algorithm"] in {"kmeans", "gaussian_mixture"} and metrics["why"]
    assert outcome.run.status == "trained"


def test_profiles_are_interpretable(first_run) -> None:
    frame, outcome = first_run
    profiles = outcome.profiles
    assert profiles["size"].sum() == len(frame) == len(outcome.assignments)
    assert profiles["share"].sum() == pytest.approx(1.0)
    names = dict(zip(profiles["segment_id"], profiles["segment_name"], strict=True))
    by_group = outcome.assignments.assign(group=outcome.assignments["person_id"].str[:2])
    # every planted group lands in one segment, named after its behaviour
    for group, expected in [("hv", "High-value loyal"), ("lp", "Lapsed"), ("nw", "New customers")]:
        ids = by_group.loc[by_group["group"] == group, "segment_id"].unique()
        assert len(ids) == 1, group
        assert names[ids[0]] == expected
    high_value = profiles.loc[profiles["segment_name"] == "High-value loyal"].iloc[0]
    centroid = json.loads(high_value["centroid"])
    assert centroid["avg_order_value"] == pytest.approx(120, rel=0.15)  # original units, not scaled
    assert len(json.loads(high_value["top_features"])) == 3
    # first run: ids ordered by value
    assert high_value["segment_id"] == 1


def test_segment_ids_are_stable_across_runs(first_run) -> None:
    frame, outcome = first_run
    previous_profiles = outcome.profiles[["segment_id", "centroid"]]
    # next run: rows in another order, slightly different behaviour, some newcomers, some gone
    shifted = behaviour_groups(seed=1).sample(frac=1.0, random_state=3)
    shifted = shifted[~shifted["person_id"].isin(["hv0000", "lp0000"])]
    newcomers = behaviour_groups(seed=2).head(5).assign(person_id=lambda f: "zz" + f["person_id"])
    shifted = pd.concat([shifted, newcomers], ignore_index=True)
    with threadpool_limits(1):
        second = segments.fit_segments(
            shifted,
            date(2026, 7, 31),
            datetime(2026, 8, 1),
            previous_profiles,
            outcome.assignments[["person_id", "segment_id"]],
            AS_OF,
        )
    assert second.run.metrics["matched_to_previous"] is True
    before = dict(zip(outcome.assignments["person_id"], outcome.assignments["segment_id"], strict=True))
    after = dict(zip(second.assignments["person_id"], second.assignments["segment_id"], strict=True))
    common = [p for p in before if p in after]
    kept = np.mean([before[p] == after[p] for p in common])
    assert kept > 0.95
    old_names = dict(zip(outcome.profiles["segment_id"], outcome.profiles["segment_name"], strict=True))
    new_names = dict(zip(second.profiles["segment_id"], second.profiles["segment_name"], strict=True))
    assert old_names == new_names

    changes = second.changes.set_index("person_id")
    assert changes.loc["hv0000", "change_type"] == "left"
    assert (changes.loc[changes.index.str.startswith("zz"), "change_type"] == "new").all()
    assert (changes["previous_as_of"] == AS_OF).all()
    moved = changes[changes["change_type"] == "moved"]
    assert all(before[p] != after[p] for p in moved.index)


def test_too_few_customers_is_a_clear_error() -> None:
    with pytest.raises(segments.NotEnoughCustomers, match="segments need"):
        segments.fit_segments(behaviour_groups().head(5), AS_OF, TRAINED_AT)
    identical = pd.concat([behaviour_groups().head(1)] * 30, ignore_index=True)
    identical["person_id"] = [f"p{i}" for i in range(30)]
    with pytest.raises(segments.NotEnoughCustomers, match="distinct"):
        segments.fit_segments(identical, AS_OF, TRAINED_AT)


def test_gaussian_mixture_is_used_when_it_wins(monkeypatch) -> None:
    # a negative tolerance means "the mixture wins unless kmeans beats it by more than 1.0 silhouette"
    monkeypatch.setattr(segments, "SELECTION_TOLERANCE", -1.0)
    frame = behaviour_groups(seed=4)
    with threadpool_limits(1):
        outcome = segments.fit_segments(frame, AS_OF, TRAINED_AT)
    assert outcome.run.metrics["chosen_algorithm"] == "gaussian_mixture"
    assert outcome.run.parameters["algorithm"] == "gaussian_mixture"
    # ml.model_runs names the model for its purpose and records the estimator that was chosen
    con = duckdb.connect()
    write_model_runs(con, [outcome.run])
    assert con.sql("select model_name, algorithm from ml.model_runs").fetchall() == [("segments", "gaussian_mixture")]
    assert "gaussian_mixture beats kmeans" in outcome.run.metrics["why"]
    assert type(outcome.model.named_steps["model"]).__name__ == "GaussianMixture"
    assert len(outcome.assignments) == len(frame) and outcome.profiles["size"].sum() == len(frame)
    predicted = outcome.model.predict(frame[segments.FEATURES])
    assert len(set(predicted)) == outcome.profiles.shape[0]


def z_profile(**deviations: float) -> dict[str, float]:
    return {feature: deviations.get(feature, 0.0) for feature in segments.NUMERIC_FEATURES}


def test_segments_named_alike_are_told_apart_by_what_distinguishes_them() -> None:
    high_value = {"monetary": 1.5, "frequency": 1.2}
    names = segments.name_segments(
        {
            1: z_profile(**high_value, online_share=0.9),
            2: z_profile(**high_value, online_share=-0.8),
            3: z_profile(recency_days=1.5),
        }
    )
    assert names == {1: "High-value loyal (online)", 2: "High-value loyal (in-store)", 3: "Lapsed"}
    # three alike: each gets the qualifier of its own largest difference, never a number or a repeat
    three = segments.name_segments(
        {
            1: z_profile(**high_value, online_share=0.9),
            2: z_profile(**high_value, online_share=-0.9),
            3: z_profile(**high_value, avg_order_value=2.5),
        }
    )
    assert three == {
        1: "High-value loyal (online)",
        2: "High-value loyal (in-store)",
        3: "High-value loyal (big baskets)",
    }


def test_model_runs_written_before_the_algorithm_column_are_migrated() -> None:
    con = duckdb.connect()
    con.execute("create schema ml")
    con.execute(
        "create table ml.model_runs (model_name varchar not null, as_of date not null, trained_at timestamp not null, "
        "status varchar not null, reason varchar, training_window varchar, time_unit varchar, parameters json, "
        "metrics json, features json, library_versions json, artifact_path varchar, primary key (model_name, as_of))"
    )
    con.execute(
        "insert into ml.model_runs values ('kmeans_segments', '2026-05-31', '2026-06-01', 'trained', null, null, "
        "'day', '{\"algorithm\": \"kmeans\", \"k\": 4}', '{}', '[]', '{}', null)"
    )
    write_model_runs(con, [ModelRun("bg_nbd", AS_OF, TRAINED_AT), ModelRun("gamma_gamma", AS_OF, TRAINED_AT,
                                                                           status="skipped", reason="few")])
    assert con.sql("select model_name, as_of, algorithm from ml.model_runs order by all").fetchall() == [
        ("bg_nbd", AS_OF, "bg_nbd"),
        ("gamma_gamma", AS_OF, None),
        ("segments", date(2026, 5, 31), "kmeans"),
    ]
