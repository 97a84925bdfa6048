"""Propensity: point-in-time features (no leakage), labels from the window after, calibrated scores."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from touchpoint.ml import features, propensity
from touchpoint.ml.synthetic import build_synthetic_marts

AS_OF = date(2026, 6, 30)


@pytest.fixture(scope="module")
def purchases() -> pd.DataFrame:
    con = duckdb.connect()
    build_synthetic_marts(con, 900, AS_OF, seed=11)
    return features.load_purchases(con, AS_OF)


def test_features_ignore_everything_at_or_after_the_cutoff(purchases: pd.DataFrame) -> None:
    cutoff = datetime(2026, 3, 1)
    baseline = features.propensity_features(purchases, cutoff)
    # Rewrite the future wildly: new customers, huge amounts, a burst of orders right at the cut-off.
    future = purchases[purchases["ordered_at"] >= cutoff].copy()
    future["amount"] = future["amount"] * 1000
    burst = purchases.drop_duplicates("person_id").head(50).assign(ordered_at=pd.Timestamp(cutoff), amount=1e6)
    newcomers = burst.assign(person_id="new-" + burst["person_id"])
    changed = pd.concat([purchases[purchases["ordered_at"] < cutoff], future, burst, newcomers], ignore_index=True)
    after = features.propensity_features(changed, cutoff)
    pd.testing.assert_frame_equal(baseline.reset_index(drop=True), after.reset_index(drop=True))
    assert not after["person_id"].str.startswith("new-").any()

    # ...whereas one order a second before the cut-off does change the features
    just_before = burst.head(1).assign(ordered_at=pd.Timestamp(cutoff) - pd.Timedelta(seconds=1))
    moved = features.propensity_features(pd.concat([purchases, just_before], ignore_index=True), cutoff)
    assert not moved.reset_index(drop=True).equals(baseline.reset_index(drop=True))


def test_labels_come_only_from_the_window_after_the_cutoff() -> None:
    rows = pd.DataFrame(
        {
            "person_id": ["a", "a", "b", "b", "c", "c"],
            "ordered_at": pd.to_datetime(
                ["2026-01-01", "2026-02-28 23:59:59", "2026-01-05", "2026-03-31", "2026-01-09", "2026-03-01"],
                format="ISO8601",
            ),
            "channel": "online",
            "amount": 10.0,
        }
    )
    snapshot = features.labelled_snapshot(rows, datetime(2026, 3, 1), horizon_days=30).set_index("person_id")
    # a: last order before the cut-off -> no label; b: 2026-03-31 is day 30 -> outside [cutoff, cutoff + 30d)
    # c: an order exactly at the cut-off is in the label window and not a feature
    assert snapshot["label"].to_dict() == {"a": 0, "b": 0, "c": 1}
    assert snapshot.loc["c", "orders_total"] == 1
    assert snapshot.loc["a", "orders_total"] == 2
    assert snapshot.loc["a", "recency_days"] == pytest.approx(1 / 86400)


def test_validation_is_time_based_and_models_are_calibrated(purchases: pd.DataFrame) -> None:
    as_of_end = features.day_end(AS_OF)
    with threadpool_limits(1):
        scored, run, model = propensity.train_and_score(purchases, as_of_end, propensity.PURCHASE_30D)
    validation_cutoff = as_of_end - timedelta(days=30)
    assert run.metrics["validation_cutoff"] == f"{validation_cutoff:%Y-%m-%d}"
    assert all(
        pd.Timestamp(c) + pd.Timedelta(days=30) <= pd.Timestamp(validation_cutoff)
        for c in run.metrics["training_cutoffs"]
    )
    candidates = run.metrics["candidates"]
    assert set(candidates) == {"logistic_regression", "hist_gradient_boosting"}
    chosen = run.parameters["algorithm"]
    assert candidates[chosen]["pr_auc"] == max(c["pr_auc"] for c in candidates.values())
    validation = run.metrics["validation"]
    assert validation["roc_auc"] > 0.7
    assert validation["top_decile_lift"] > 1.5
    assert set(validation) >= {"roc_auc", "pr_auc", "brier", "top_decile_lift"}
    # calibrated despite class weighting: the mean probability is near the observed base rate
    assert validation["brier"] < validation["base_rate"] * (1 - validation["base_rate"])
    current = features.propensity_features(purchases, as_of_end)
    assert len(scored) == len(current) and scored["probability"].between(0, 1).all()
    recent_base_rate = validation["base_rate"]
    assert scored["probability"].mean() == pytest.approx(recent_base_rate, abs=0.08)
    assert model.named_steps["features"] is not None


def test_deciles_are_balanced_and_deterministic() -> None:
    probabilities = np.array([0.1, 0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05, 0.95])
    ids = np.array([f"p{i:02d}" for i in range(len(probabilities))])
    first = propensity.deciles(probabilities, ids)
    assert first.min() == 1 and first.max() == 10
    assert first[np.argmax(probabilities)] == 10 and first[np.argmin(probabilities)] == 1
    order = np.random.default_rng(0).permutation(len(ids))
    again = propensity.deciles(probabilities[order], ids[order])
    assert dict(zip(ids[order], again, strict=True)) == dict(zip(ids, first, strict=True))


def test_not_enough_data_is_a_clear_error() -> None:
    one_day = pd.DataFrame(
        {
            "person_id": [f"p{i}" for i in range(5)],
            "ordered_at": pd.Timestamp("2026-06-01"),
            "channel": "store",
            "amount": 20.0,
        }
    )
    with pytest.raises(propensity.NotEnoughData, match="need >= 5 of each"):
        propensity.train_and_score(one_day, datetime(2026, 7, 1), propensity.CHURN_90D)
