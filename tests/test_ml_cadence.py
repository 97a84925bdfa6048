"""ML on a cadence (ml/cadence.py, ml/drift.py): scoring every day, training when the models are old, the data
drifted or grew, or no trusted model exists; what ml.model_runs records of it; as-of correctness and reruns."""

from __future__ import annotations

import json
import math
import re
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from touchpoint.config import RunContext
from touchpoint.ml import cadence
from touchpoint.ml.cadence import MlSettingError, TrainingPolicy
from touchpoint.ml.drift import FeatureDistribution, FeatureReference, psi
from touchpoint.ml.stage import TABLE_COLUMNS, run_ml
from touchpoint.sources.synthetic_marts import build_synthetic_marts, write_marts

AS_OF = date(2026, 6, 30)
NEXT_DAY = AS_OF + timedelta(days=1)
MODELS = ["bg_nbd", "churn_propensity", "gamma_gamma", "purchase_propensity", "segments"]
AUTO = TrainingPolicy()


def run(con: duckdb.DuckDBPyConnection, home: Path, as_of: date, run_id: str, policy: TrainingPolicy = AUTO):
    with threadpool_limits(1):
        return run_ml(RunContext(as_of=as_of, home=home, run_id=run_id), con, policy)


def model_runs(con: duckdb.DuckDBPyConnection, as_of: date) -> pd.DataFrame:
    return con.execute(
        "select * from ml.model_runs where as_of = ? order by model_name", [as_of]
    ).df().set_index("model_name")


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, pd.DataFrame]:
    frames = {}
    for table in [*TABLE_COLUMNS, "model_runs"]:
        columns = ", ".join(f'"{row[0]}"' for row in con.execute(f"describe ml.{table}").fetchall())
        frames[table] = con.execute(f"select * from ml.{table} order by {columns}").df()
    return frames


@pytest.fixture
def first_day(tmp_path: Path) -> tuple[duckdb.DuckDBPyConnection, Path, pd.DataFrame]:
    """A warehouse whose models were all trained as of AS_OF (300 synthetic customers)."""
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    orders = build_synthetic_marts(con, 300, AS_OF, seed=7)
    run(con, tmp_path, AS_OF, "day-1")
    return con, tmp_path, orders


def test_first_run_trains_every_model_and_keeps_its_feature_reference(first_day) -> None:
    con, home, orders = first_day
    runs = model_runs(con, AS_OF)
    assert runs.index.tolist() == MODELS
    assert (runs["action"] == "trained").all() and (runs["status"] == "trained").all()
    assert (runs["training_trigger"] == "no_model").all()
    assert runs.loc["segments", "training_reason"] == "no segments model trained before 2026-06-30"
    assert runs["psi"].isna().all() and (runs["trained_as_of"] == pd.Timestamp(AS_OF)).all()
    for name, row in runs.iterrows():
        artifact = home / row["artifact_path"]  # kept relative to the home
        assert row["model_version"] == cadence.model_version(AS_OF, artifact)
        assert row["model_version"].startswith("2026-06-30.") and len(row["model_version"]) == 10 + 1 + 12
        sidecar = json.loads(artifact.with_suffix(".json").read_text())
        assert sidecar["model_version"] == row["model_version"]
        assert set(sidecar["feature_reference"]["features"]) == set(json.loads(row["features"])), name


def test_next_day_within_cadence_scores_with_the_model_of_day_one(first_day) -> None:
    con, home, orders = first_day
    day_one = model_runs(con, AS_OF)
    write_marts(con, orders, NEXT_DAY, seed=7)
    result = run(con, home, NEXT_DAY, "day-2")
    runs = model_runs(con, NEXT_DAY)
    assert (runs["action"] == "scored").all(), runs[["action", "training_reason"]]
    assert (runs["status"] == "trained").all()  # a trained model scored the day: the gate and marts rely on it
    assert runs["model_version"].tolist() == day_one["model_version"].tolist()
    assert runs["artifact_path"].tolist() == day_one["artifact_path"].tolist()
    assert (runs["trained_as_of"] == pd.Timestamp(AS_OF)).all()
    assert (runs["trained_at"] == pd.Timestamp(NEXT_DAY)).all()  # the end of the training day, AS_OF
    assert runs["training_trigger"].isna().all() and runs["training_reason"].isna().all()
    assert runs["psi"].between(0, 0.2).all(), runs["psi"]
    assert json.loads(runs.loc["purchase_propensity", "metrics"])["validation"] == json.loads(
        day_one.loc["purchase_propensity", "metrics"])["validation"]
    drift = json.loads(runs.loc["segments", "drift"])
    assert drift["against_version"] == day_one.loc["segments", "model_version"]
    assert max(drift["psi"].values()) == pytest.approx(runs.loc["segments", "psi"])
    assert not (home / "artifacts" / "day-2" / "models").exists()  # nothing trained, nothing saved
    assert "segments=scored by 2026-06-30." in result.summary()
    # every buyer is scored, and ids stay those of the day before
    buyers = con.execute("select count(distinct person_id) from marts.fct_orders where is_purchase").fetchone()[0]
    assert result.rows_written["customer_propensity"] == result.rows_written["customer_clv"] == buyers
    ids = con.execute("select distinct segment_id from ml.segment_profiles where as_of = ? order by 1",
                      [NEXT_DAY]).fetchall()
    assert ids == con.execute("select distinct segment_id from ml.segment_profiles where as_of = ? order by 1",
                              [AS_OF]).fetchall()


def test_scoring_day_rerun_is_identical(first_day) -> None:
    con, home, orders = first_day
    write_marts(con, orders, NEXT_DAY, seed=7)
    run(con, home, NEXT_DAY, "day-2")
    before = snapshot(con)
    run(con, home, NEXT_DAY, "day-2-again")
    after = snapshot(con)
    for table, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[table], obj=table)


def test_cadence_trains_when_the_model_is_a_week_old(first_day) -> None:
    con, home, orders = first_day
    six_days, seven_days = AS_OF + timedelta(days=6), AS_OF + timedelta(days=7)
    write_marts(con, orders, six_days, seed=7)
    run(con, home, six_days, "day-7", TrainingPolicy(max_psi=10, max_volume_change=10))
    assert (model_runs(con, six_days)["action"] == "scored").all()
    write_marts(con, orders, seven_days, seed=7)
    run(con, home, seven_days, "day-8", TrainingPolicy(max_psi=10, max_volume_change=10))
    runs = model_runs(con, seven_days)
    assert (runs["action"] == "trained").all() and (runs["training_trigger"] == "cadence").all()
    assert runs.loc["segments", "training_reason"] == (
        "the model trained as of 2026-06-30 is 7 days old (train every 7 days)")
    assert runs["model_version"].str.startswith("2026-07-07.").all()
    assert runs["psi"].notna().all()  # measured against the model it replaces


def test_drifted_spend_trains_with_its_psi_recorded(first_day) -> None:
    con, home, orders = first_day
    richer = orders.assign(net_amount=orders["net_amount"] * 4, gross_amount=orders["gross_amount"] * 4)
    write_marts(con, richer, NEXT_DAY, seed=7)
    run(con, home, NEXT_DAY, "day-2")
    runs = model_runs(con, NEXT_DAY)
    assert (runs["action"] == "trained").all() and (runs["training_trigger"] == "drift").all(), runs["training_reason"]
    segments = runs.loc["segments"]
    by_feature = json.loads(segments["drift"])["psi"]
    assert segments["psi"] == pytest.approx(max(by_feature.values())) and segments["psi"] > 0.2
    assert by_feature["recency_days"] < 0.2 < by_feature["monetary"]  # spend moved, timing did not
    assert segments["training_reason"].startswith(f"PSI {segments['psi']:.3f} of ")
    assert "is above 0.2" in segments["training_reason"]
    # CLV trains as a family: Gamma-Gamma's spend drifted, so BG/NBD (whose inputs did not) trains with it
    assert runs.loc["bg_nbd", "training_reason"] == runs.loc["gamma_gamma", "training_reason"]
    assert runs.loc["bg_nbd", "psi"] < 0.2 < runs.loc["gamma_gamma", "psi"]


def test_volume_change_trains(first_day) -> None:
    con, home, orders = first_day
    persons = sorted(orders["person_id"].dropna().unique())
    fewer = orders[orders["person_id"].isin(persons[: int(len(persons) * 0.7)])]
    write_marts(con, fewer, NEXT_DAY, seed=7)
    run(con, home, NEXT_DAY, "day-2", TrainingPolicy(max_psi=10))
    runs = model_runs(con, NEXT_DAY)
    assert (runs["training_trigger"] == "volume").all(), runs["training_reason"]
    drift = json.loads(runs.loc["purchase_propensity", "drift"])
    assert drift["rows_change"] == pytest.approx(drift["rows"] / drift["training_rows"] - 1)
    assert drift["rows_change"] < -0.2
    assert "more than ±20%" in runs.loc["purchase_propensity", "training_reason"]
    # within the configured change, the same day scores (on a first run: a rerun keeps the day's decision)
    con.execute("delete from ml.model_runs where as_of = ?", [NEXT_DAY])
    run(con, home, NEXT_DAY, "day-2-lenient", TrainingPolicy(max_psi=10, max_volume_change=0.5))
    assert (model_runs(con, NEXT_DAY)["action"] == "scored").all()


def test_missing_model_file_trains_that_model_only(first_day) -> None:
    con, home, orders = first_day
    segments_file = home / model_runs(con, AS_OF).loc["segments", "artifact_path"]
    segments_file.unlink()
    write_marts(con, orders, NEXT_DAY, seed=7)
    run(con, home, NEXT_DAY, "day-2")
    runs = model_runs(con, NEXT_DAY)
    assert runs.loc["segments", "action"] == "trained" and runs.loc["segments", "training_trigger"] == "no_model"
    assert runs.loc["segments", "training_reason"] == (
        f"the segments model trained as of 2026-06-30: model file {segments_file} is missing")
    assert (runs.drop(index="segments")["action"] == "scored").all()


def test_changed_file_libraries_or_features_are_not_trusted(first_day, monkeypatch) -> None:
    con, home, orders = first_day
    write_marts(con, orders, NEXT_DAY, seed=7)
    bg_file = home / model_runs(con, AS_OF).loc["bg_nbd", "artifact_path"]
    bg_file.write_bytes(bg_file.read_bytes() + b"\0")
    candidate = cadence.latest_trained(con, "bg_nbd", NEXT_DAY, ["frequency", "recency", "T"], home=home)
    assert candidate.trained is None and "is not the file trained" in candidate.unusable
    candidate = cadence.latest_trained(con, "segments", NEXT_DAY, ["recency_days"], home=home)
    assert candidate.trained is None and "are not today's ['recency_days']" in candidate.unusable
    assert cadence.latest_trained(con, "segments", NEXT_DAY, candidate_features(con), home=home).trained is not None
    versions = {**cadence.library_versions(), "scikit-learn": "99.0"}
    monkeypatch.setattr(cadence, "library_versions", lambda: versions)
    candidate = cadence.latest_trained(con, "segments", NEXT_DAY, candidate_features(con), home=home)
    assert candidate.trained is None and "scikit-learn" in candidate.unusable and "-> 99.0" in candidate.unusable


def candidate_features(con: duckdb.DuckDBPyConnection) -> list[str]:
    return json.loads(model_runs(con, AS_OF).loc["segments", "features"])


def test_backfill_before_the_model_trains_and_never_uses_a_later_model(first_day) -> None:
    con, home, orders = first_day
    earlier = AS_OF - timedelta(days=3)
    write_marts(con, orders, earlier, seed=7)
    run(con, home, earlier, "backfill")
    runs = model_runs(con, earlier)
    assert (runs["action"] == "trained").all() and (runs["training_trigger"] == "no_model").all()
    assert (runs["trained_as_of"] == pd.Timestamp(earlier)).all()
    # the day after the backfill, within the cadence, is scored by the backfill's model, not by AS_OF's
    between = earlier + timedelta(days=1)
    write_marts(con, orders, between, seed=7)
    run(con, home, between, "between", TrainingPolicy(max_psi=10, max_volume_change=10))
    scored = model_runs(con, between)
    assert (scored["action"] == "scored").all()
    assert scored["model_version"].tolist() == runs["model_version"].tolist()
    never_later = con.execute("select count(*) from ml.model_runs where trained_as_of > as_of").fetchone()[0]
    assert never_later == 0


def test_forced_training_and_a_rerun_of_a_training_day_decide_alike(first_day) -> None:
    con, home, orders = first_day
    write_marts(con, orders, NEXT_DAY, seed=7)
    run(con, home, NEXT_DAY, "forced", TrainingPolicy(mode="always"))
    runs = model_runs(con, NEXT_DAY)
    assert (runs["training_trigger"] == "forced").all()
    assert (runs["training_reason"] == "TOUCHPOINT_ML_TRAIN=always").all()
    assert runs["psi"].notna().all()
    # a rerun of AS_OF does not score it with its own (or a later) model: it trains again, identically
    write_marts(con, orders, AS_OF, seed=7)
    before = model_runs(con, AS_OF)
    run(con, home, AS_OF, "day-1")
    after = model_runs(con, AS_OF)
    pd.testing.assert_frame_equal(before, after)


def test_settings_from_the_environment() -> None:
    assert TrainingPolicy.from_env({}) == TrainingPolicy("auto", 7, 0.2, 0.2)
    assert TrainingPolicy.from_env({
        "TOUCHPOINT_ML_TRAIN": " Always ", "TOUCHPOINT_ML_TRAIN_EVERY_DAYS": "1",
        "TOUCHPOINT_ML_RETRAIN_PSI": "0.25", "TOUCHPOINT_ML_RETRAIN_VOLUME_CHANGE": "35%",
    }) == TrainingPolicy("always", 1, 0.25, 0.35)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TOUCHPOINT_ML_TRAIN", "weekly", "TOUCHPOINT_ML_TRAIN must be one of auto, always, not 'weekly'"),
        ("TOUCHPOINT_ML_TRAIN_EVERY_DAYS", "0", "TOUCHPOINT_ML_TRAIN_EVERY_DAYS must be a whole number of days >= 1, "
                                                "not '0'"),
        ("TOUCHPOINT_ML_TRAIN_EVERY_DAYS", "7.5", "must be a whole number of days >= 1, not '7.5'"),
        ("TOUCHPOINT_ML_RETRAIN_PSI", "high", "TOUCHPOINT_ML_RETRAIN_PSI must be a PSI above 0, e.g. 0.2, not 'high'"),
        ("TOUCHPOINT_ML_RETRAIN_PSI", "nan", "must be a PSI above 0"),
        ("TOUCHPOINT_ML_RETRAIN_VOLUME_CHANGE", "-0.1", "must be a share above 0, e.g. 0.2 for 20%, not '-0.1'"),
    ],
)
def test_bad_settings_fail_clearly(name: str, value: str, message: str, monkeypatch, tmp_path: Path) -> None:
    with pytest.raises(MlSettingError, match=re.escape(message)):
        TrainingPolicy.from_env({name: value})
    monkeypatch.setenv(name, value)
    con = duckdb.connect()
    with pytest.raises(MlSettingError, match=name):  # the stage refuses before reading anything
        run_ml(RunContext(as_of=AS_OF, home=tmp_path, run_id="bad"), con)


def test_psi_matches_a_hand_computed_value() -> None:
    # expected shares 0.5 / 0.3 / 0.2, actual 0.3 / 0.3 / 0.4:
    # (0.3 - 0.5) ln(0.3 / 0.5) + 0 + (0.4 - 0.2) ln(0.4 / 0.2) = 0.2 * 0.5108 + 0.2 * 0.6931 = 0.24079
    assert psi(np.array([0.5, 0.3, 0.2]), np.array([0.3, 0.3, 0.4])) == pytest.approx(0.240795, abs=1e-6)
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    # an empty bin counts as 1e-4: 0.5 ln(0.5 / 1e-4) + (0.5 - 1) ln(0.5 / 1) (= 4.2586 + 0.3466)
    assert psi(np.array([0.0, 1.0]), np.array([0.5, 0.5])) == pytest.approx(
        (0.5 - 1e-4) * math.log(0.5 / 1e-4) + (0.5 - 1) * math.log(0.5), abs=1e-9)


def test_feature_distribution_bins_at_training_deciles() -> None:
    training = pd.Series(np.arange(100, dtype="float64"))  # deciles 9.9, 19.8, ..., 89.1
    reference = FeatureDistribution.of(training)
    assert reference.edges == pytest.approx([9.9 * k for k in range(1, 10)])
    assert reference.shares == pytest.approx([0.1] * 10)
    assert reference.stability(training) == 0.0
    # everything moved to the top bin: 9 bins at 1e-4 and one at 1.0
    top = reference.stability(pd.Series([1000.0] * 5))
    assert top == pytest.approx(9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1) + 0.9 * math.log(10))
    # many equal values: repeated edges are dropped; a value equal to an edge falls in the bin above it
    zeros = FeatureDistribution.of(pd.Series([0.0] * 80 + [1.0] * 10 + [5.0] * 10))
    # (deciles interpolate: 80% at 0.2 between the last 0 and the first 1, 90% at 1.4 between 1 and 5)
    assert zeros.edges == pytest.approx((0.0, 0.2, 1.4)) and zeros.shares == pytest.approx([0.0, 0.8, 0.1, 0.1])
    # categories, with a bin for those not seen in training
    colours = FeatureDistribution.of(pd.Series(["red"] * 3 + ["blue"]))
    assert colours.categories == ("blue", "red") and colours.shares == (0.25, 0.75, 0.0)
    assert colours.bin_shares(pd.Series(["red", "green"])).tolist() == [0.0, 0.5, 0.5]
    # a reference survives its JSON sidecar
    frame = pd.DataFrame({"x": training, "colour": ["red", "blue"] * 50})
    saved = FeatureReference.of(frame, ["x", "colour"])
    assert FeatureReference.from_dict(json.loads(json.dumps(saved.as_dict()))) == saved


def test_model_runs_from_before_the_cadence_are_migrated_and_their_models_retrained(first_day) -> None:
    con, home, orders = first_day
    for column in ("action", "model_version", "trained_as_of", "training_trigger", "training_reason", "psi", "drift"):
        con.execute(f"alter table ml.model_runs drop column {column}")
    write_marts(con, orders, NEXT_DAY, seed=7)
    run(con, home, NEXT_DAY, "day-2")
    legacy = model_runs(con, AS_OF)
    assert (legacy["action"] == "trained").all() and (legacy["trained_as_of"] == pd.Timestamp(AS_OF)).all()
    assert legacy["model_version"].isna().all()
    runs = model_runs(con, NEXT_DAY)
    assert (runs["training_trigger"] == "no_model").all()
    assert runs.loc["segments", "training_reason"] == (
        "the segments model trained as of 2026-06-30: no model version recorded (trained before versions were kept)")


GATE_DDL = """create table audit.gate_results (
    run_id varchar, layer varchar, suite varchar, expectation varchar, "column" varchar, success boolean,
    unexpected_count bigint, sample json, table_name varchar, severity varchar, element_count bigint, as_of date,
    checked_at timestamp)"""


def gate_row(con, run_id: str, layer: str, expectation: str, success: bool, severity: str, as_of: date,
             checked_at: str) -> None:
    con.execute("insert into audit.gate_results (run_id, layer, expectation, success, severity, as_of, checked_at) "
                "values (?, ?, ?, ?, ?, ?, ?)", [run_id, layer, expectation, success, severity, as_of, checked_at])


def test_a_model_whose_day_failed_the_ml_gate_does_not_score(first_day) -> None:
    con, home, orders = first_day
    features = candidate_features(con)
    con.execute("create schema audit")
    con.execute(GATE_DDL)
    # failures that do not count: another layer, a warning, another day
    gate_row(con, "day-1", "marts", "rows_match", False, "critical", AS_OF, "2026-07-01 01:00")
    gate_row(con, "day-1", "ml", "psi_small", False, "warning", AS_OF, "2026-07-01 01:00")
    gate_row(con, "day-0", "ml", "auc_above_floor", False, "critical", AS_OF - timedelta(days=1), "2026-06-30 01:00")
    assert cadence.latest_trained(con, "segments", NEXT_DAY, features, home=home).trained is not None
    gate_row(con, "day-1", "ml", "auc_above_floor", False, "critical", AS_OF, "2026-07-01 01:00")
    candidate = cadence.latest_trained(con, "segments", NEXT_DAY, features, home=home)
    assert candidate.trained is None
    assert candidate.unusable == ("the segments model trained as of 2026-06-30: the model of 2026-06-30 failed the "
                                  "ML gate (auc_above_floor)")
    write_marts(con, orders, NEXT_DAY, seed=7)
    run(con, home, NEXT_DAY, "day-2")
    runs = model_runs(con, NEXT_DAY)
    assert (runs["action"] == "trained").all() and (runs["training_trigger"] == "no_model").all()
    assert runs["training_reason"].str.contains("failed the ML gate").all()
    # a later run of that day's gate that passed (the day rerun) makes the model trusted again
    gate_row(con, "day-1-again", "ml", "auc_above_floor", True, "critical", AS_OF, "2026-07-01 02:00")
    assert cadence.latest_trained(con, "segments", NEXT_DAY, features, home=home).trained is not None


def test_a_model_file_that_cannot_be_loaded_trains_again(first_day, monkeypatch) -> None:
    con, home, orders = first_day
    write_marts(con, orders, NEXT_DAY, seed=7)

    def renamed(path):  # what unpickling gives once a function the pickle names was renamed
        raise AttributeError("Can't get attribute '_log1p' on <module 'touchpoint.ml.segments'>")

    monkeypatch.setattr(cadence, "joblib", SimpleNamespace(load=renamed))
    run(con, home, NEXT_DAY, "day-2")
    runs = model_runs(con, NEXT_DAY)
    assert (runs["action"] == "trained").all() and (runs["training_trigger"] == "no_model").all()
    assert runs["training_reason"].str.contains("could not be loaded \\(AttributeError: Can't get attribute").all()
    # a sidecar that does not parse is no better
    sidecar = (home / model_runs(con, AS_OF).loc["segments", "artifact_path"]).with_suffix(".json")
    sidecar.write_text(json.dumps({"feature_reference": {"rows": "many"}}))
    monkeypatch.undo()
    candidate = cadence.latest_trained(con, "segments", NEXT_DAY, candidate_features(con), home=home)
    assert candidate.trained is None and "could not be loaded" in candidate.unusable


def test_forced_training_never_loads_an_earlier_model(first_day, monkeypatch) -> None:
    con, home, orders = first_day
    write_marts(con, orders, NEXT_DAY, seed=7)

    def never(path):
        raise AssertionError(f"{path} was loaded")

    monkeypatch.setattr(cadence, "joblib", SimpleNamespace(load=never))
    run(con, home, NEXT_DAY, "forced", TrainingPolicy(mode="always"))
    runs = model_runs(con, NEXT_DAY)
    assert (runs["training_trigger"] == "forced").all()
    assert runs["psi"].notna().all()  # drift is still measured, from the feature references


def test_rerun_after_a_backfill_trains_as_its_first_run_did(first_day) -> None:
    con, home, orders = first_day
    before = model_runs(con, AS_OF)
    earlier = AS_OF - timedelta(days=3)
    write_marts(con, orders, earlier, seed=7)
    run(con, home, earlier, "backfill")
    # the backfill's model is now an earlier candidate, usable within the policy: AS_OF is still trained again
    write_marts(con, orders, AS_OF, seed=7)
    run(con, home, AS_OF, "day-1", TrainingPolicy(max_psi=10, max_volume_change=10))
    after = model_runs(con, AS_OF)
    decision = ["action", "training_trigger", "training_reason", "trained_as_of", "psi", "drift"]
    pd.testing.assert_frame_equal(before[decision], after[decision])
    # the same models (segments match their ids to the day before, which the backfill wrote: not the decision)
    pd.testing.assert_frame_equal(before.drop(index="segments"), after.drop(index="segments"))


def test_rerun_of_a_scored_day_scores_with_the_same_model_or_says_why_not(first_day) -> None:
    con, home, orders = first_day
    write_marts(con, orders, NEXT_DAY, seed=7)
    run(con, home, NEXT_DAY, "day-2")
    before = snapshot(con)
    # a policy that would train today still scores the rerun with the model that scored the day first
    run(con, home, NEXT_DAY, "day-2-again", TrainingPolicy(max_psi=1e-9, max_volume_change=1e-9))
    after = snapshot(con)
    for table, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[table], obj=table)
    # that model's file changed since: the rerun decides anew, and records why
    segments_file = home / model_runs(con, AS_OF).loc["segments", "artifact_path"]
    segments_file.write_bytes(segments_file.read_bytes() + b"\0")
    run(con, home, NEXT_DAY, "day-2-third")
    runs = model_runs(con, NEXT_DAY)
    assert runs.loc["segments", "action"] == "trained" and runs.loc["segments", "training_trigger"] == "no_model"
    rerun = json.loads(runs.loc["segments", "drift"])["rerun"]
    assert rerun.startswith("rerun of 2026-07-01: the segments model 2026-06-30.") and "decided anew" in rerun
    assert "is not the file trained" in rerun and rerun in runs.loc["segments", "training_reason"]
    assert (runs.drop(index="segments")["action"] == "scored").all()


def test_model_files_are_named_by_their_hash_and_never_overwritten(first_day) -> None:
    con, home, orders = first_day
    first = model_runs(con, AS_OF)
    for name, row in first.iterrows():
        path = home / row["artifact_path"]
        assert path.name == f"{name}.{row['model_version'].split('.')[1]}.joblib"
        assert path.with_suffix(".json").is_file()
    kept = {name: (home / path).read_bytes() for name, path in first["artifact_path"].items()}
    # a rerun of the training day on other data trains other models: new files, the old ones untouched
    richer = orders.assign(net_amount=orders["net_amount"] * 4, gross_amount=orders["gross_amount"] * 4)
    write_marts(con, richer, AS_OF, seed=7)
    run(con, home, AS_OF, "day-1", TrainingPolicy(mode="always"))
    second = model_runs(con, AS_OF)
    assert (second["model_version"] != first["model_version"]).any()
    for name, path in first["artifact_path"].items():
        assert (home / path).read_bytes() == kept[name]
        assert cadence.model_version(AS_OF, home / path) == first.loc[name, "model_version"]
    assert not list((home / "artifacts" / "day-1" / "models").glob(".*"))  # no partial file left


def test_model_files_are_recorded_relative_to_the_home_and_old_absolute_paths_still_work(first_day) -> None:
    con, home, orders = first_day
    runs = model_runs(con, AS_OF)
    assert runs["artifact_path"].str.startswith("artifacts/day-1/models/").all()
    features = candidate_features(con)
    # found relative to the home given, wherever it is
    moved = home.parent / f"{home.name}-moved"
    (moved / "artifacts").parent.mkdir(parents=True, exist_ok=True)
    (home / "artifacts").rename(moved / "artifacts")
    assert cadence.latest_trained(con, "segments", NEXT_DAY, features, home=moved).trained is not None
    assert "is missing" in cadence.latest_trained(con, "segments", NEXT_DAY, features, home=home).unusable
    # a row written before (absolute path) is read as it is
    con.execute("update ml.model_runs set artifact_path = ? || '/' || artifact_path", [str(moved)])
    assert cadence.latest_trained(con, "segments", NEXT_DAY, features, home=home).trained is not None
