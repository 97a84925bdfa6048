"""Propensity: point-in-time features (no leakage), labels from the window after, calibrated scores."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from touchpoint.ml import features, propensity
from touchpoint.sources.synthetic_marts import build_synthetic_marts

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
    # Measured (worlds seeded 11/12/13): ROC-AUC 0.847/0.834/0.831, top-decile lift 4.48/5.06/4.94. The margin
    # is about two standard errors of one ~900-row validation snapshot with ~100 buyers: AUC +-0.02, lift +-0.45
    # (the top decile holds ~90 rows); a model that ignores recency or frequency falls under both.
    assert validation["roc_auc"] > 0.80, validation
    assert validation["top_decile_lift"] > 3.5, validation
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


# --------------------------------------------------------------------------- the written scores, by value


@pytest.fixture(scope="module")
def scored_world(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ml.customer_propensity's rows (score_all) as of AS_OF, and what the simulated customers did next.

    Two hand-made customers join the 900: one who has bought every 10 days for a year up to the as-of date,
    one who bought once 500 days before it and never again."""
    con = duckdb.connect()
    orders = build_synthetic_marts(con, 900, AS_OF, seed=11)
    history = features.load_purchases(con, AS_OF)
    end = features.day_end(AS_OF)
    loyal = pd.DataFrame({"ordered_at": [end - timedelta(days=10 * k, hours=3) for k in range(37)]})
    loyal = loyal.assign(person_id="known-loyal", channel="online", amount=40.0)
    lapsed = pd.DataFrame({"person_id": ["known-lapsed"], "ordered_at": [end - timedelta(days=500)],
                           "channel": "online", "amount": 40.0})
    known = pd.concat([loyal, lapsed], ignore_index=True)
    known["purchase_date"] = known["ordered_at"].dt.normalize()
    history = pd.concat([history, known[history.columns]], ignore_index=True)
    with threadpool_limits(1):
        written, _ = propensity.score_all(history, AS_OF, end, tmp_path_factory.mktemp("propensity_models"))
    future = orders[(orders["status"] == "completed") & (orders["ordered_at"] >= end)]
    return written.set_index("person_id"), future


def test_a_customer_who_clearly_buys_again_scores_higher(scored_world) -> None:
    written, _ = scored_world
    loyal, lapsed = written.loc["known-loyal"], written.loc["known-lapsed"]
    assert loyal["purchase_30d_probability"] > 0.5 > lapsed["purchase_30d_probability"]
    assert lapsed["churn_90d_probability"] > 0.5 > loyal["churn_90d_probability"]
    assert loyal["purchase_30d_decile"] == 10 and loyal["churn_90d_decile"] < lapsed["churn_90d_decile"]


def test_written_scores_rank_what_customers_really_did_next(scored_world) -> None:
    """AUC of the written probabilities against the simulated next 30/90 days (not the validation split).

    Measured on synthetic worlds seeded 11/12/13: purchase 0.815/0.800/0.846, churn 0.807/0.848/0.835. With
    ~100 buyers among 900 the AUC's standard error is about 0.02, so 0.75 leaves two of them below the lowest
    seed; an inverted or shuffled score lands near 0.2 or 0.5."""
    from sklearn.metrics import roc_auc_score

    written, future = scored_world
    simulated = written.drop(index=["known-loyal", "known-lapsed"])
    end = features.day_end(AS_OF)
    bought_30 = simulated.index.isin(future.loc[future["ordered_at"] < end + timedelta(days=30), "person_id"])
    bought_90 = simulated.index.isin(future.loc[future["ordered_at"] < end + timedelta(days=90), "person_id"])
    assert roc_auc_score(bought_30, simulated["purchase_30d_probability"]) > 0.75
    assert roc_auc_score(~bought_90, simulated["churn_90d_probability"]) > 0.75
