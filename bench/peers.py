"""Peers for bench/harness.py, on the full refresh's working warehouse: Splink 5 against the identity stage, and
lifetimes' BG/NBD + Gamma-Gamma against the ML stage's CLV step (same purchases, same as-of)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

BENCH = Path(__file__).resolve().parent


def splink_peer(home: Path, full: dict[str, Any]) -> list[str]:
    """Markdown rows: Splink's generic configuration (bench/identity_splink.py) beside the identity stage."""
    result = subprocess.run(
        [sys.executable, str(BENCH / "identity_splink.py"), "demo", "--home", str(home)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        return [f"Splink failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else '?'}"]
    report = json.loads((home / "work" / "identity_splink.json").read_text())
    splink, ours = report["scores"]["splink@0.95"], report["scores"]["in-house"]
    identity = full["dbt.identity"]
    return [
        "| engine | seconds | peak RSS MB | person-record precision / recall / F1 |",
        "|---|---|---|---|",
        f"| Touchpoint identity stage (dbt.identity) | {identity.seconds:.1f} | {identity.peak_rss_mb:.0f} | "
        f"{ours['precision']:.4f} / {ours['recall']:.4f} / {ours['f1']:.4f} |",
        f"| Splink 5 generic, its part only (train, predict, cluster) | {report['seconds']:.1f} | "
        f"{report['peak_rss_mb']:.0f} | {splink['precision']:.4f} / {splink['recall']:.4f} / {splink['f1']:.4f} |",
        "",
    ]


def lifetimes_peer(home: Path, as_of: date, full: dict[str, Any]) -> list[str]:
    """Markdown rows: lifetimes fitting BG/NBD and Gamma-Gamma on marts.fct_orders' purchases up to the as-of."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    con = duckdb.connect(str(home / "work" / "warehouse.duckdb"), read_only=True)
    try:
        purchases = con.execute(
            "select person_id, order_date, net_amount from marts.fct_orders "
            "where is_purchase and person_id is not null and order_date <= ?",
            [as_of],
        ).df()
    finally:
        con.close()
    started = time.perf_counter()
    summary = summary_data_from_transaction_data(
        purchases, "person_id", "order_date", monetary_value_col="net_amount", observation_period_end=as_of
    )
    BetaGeoFitter(penalizer_coef=0.0).fit(summary["frequency"], summary["recency"], summary["T"])
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    GammaGammaFitter(penalizer_coef=0.0).fit(repeat["frequency"], repeat["monetary_value"])
    seconds = time.perf_counter() - started
    ml_clv = full["ml.score"].summary.get("seconds", {}).get("clv", float("nan"))
    return [
        "| BTYD (BG/NBD + Gamma-Gamma) | seconds |",
        "|---|---|",
        f"| Touchpoint ML stage, CLV step (fit and score) | {ml_clv:.1f} |",
        f"| lifetimes 0.11, summary + both fits ({len(summary):,} customers) | {seconds:.1f} |",
    ]
