"""The demo world's answer to marketing sends: a known treatment effect for the people a sync sent.

A send happens only through a sync, so the world learns who was sent from the syncs' experiment assignments
(`sends_from_home`: each assigned warehouse person, mapped to the world's person through the records the
warehouse clustered for it). When `advance` appends days, every newly assigned person becomes a *unit* of the
experiment, in either arm, and keeps the same row from then on (`truth/treatment_responses.parquet` is both
the world's memory of the sends it received and their truth):

- each unit has a potential response, drawn for the person and experiment whatever the arm: with probability
  RESPONSE_RATE they would buy once more, online, at a moment uniform in the RESPONSE_WINDOW_DAYS after the
  send took effect (the day after the assignment, or the first day not yet written when the sends arrive
  later);
- the response happens (`is_applied`) only in the treatment arm, and only for a person who can order online at
  that moment (`is_eligible`): their shop account is open, or they have none yet and open one to order; someone
  whose account was closed, or is opened only later, cannot answer, and the truth says so;
- a response is an extra order in the shop (its own id range, RESPONSE_ORDER_ID_BASE), priced like the
  person's own purchases. It has no web session: the world's sessions were drawn before any send.

The base world is untouched (its streams are drawn before and without the sends), so a person's
counterfactual outcome is the world's own purchases, and the true effect of an experiment on "converted in N
days" is the mean over its units of (converted with their response) - (converted without), which is what a
readout of treatment against control estimates. Draws come from streams [seed, 21, crc32(experiment)] over all
persons, so a unit's response does not depend on who else was sent.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from . import writers
from .world import CANCEL_RATE, REFUND_RATE, World, customer_versions_for, orders_for

RESPONSE_RATE = 0.2
RESPONSE_WINDOW_DAYS = 14.0
RESPONSE_ORDER_ID_BASE = 900_000_000  # far above the base world's order ids (ORDER_ID_BASE + one per purchase)
RESPONSE_CUSTOMER_ID_BASE = 800_000_000  # accounts opened to answer, numbered like their first response order
RESPONSES_FILE = "treatment_responses.parquet"
SENDS_COLUMNS = ["experiment", "person_id", "arm", "assigned_day", "true_person_id"]
UNIT_COLUMNS = {
    "experiment": "object",
    "person_id": "object",  # the warehouse's person id that was assigned
    "person_idx": "int64",  # the world's person it stands for
    "arm": "object",
    "assigned_day": "int64",  # day index of the assigning run's as-of
    "effective_from": "float64",  # day index from which the send can act
    "batch": "int64",  # which advance received it (0, 1, ...): one order stream per batch
    "would_respond": "bool",
    "is_eligible": "bool",  # could answer if treated: sent once in this experiment, and able to order online
    "response_t": "float64",
    "response_amount": "float64",
    "is_applied": "bool",
    "order_id": "float64",  # the response's order id, NaN when not applied
}


def read_units(truth: Path) -> pd.DataFrame:
    """The units the world has received so far (empty for a world that was never sent to)."""
    path = truth / RESPONSES_FILE
    if not path.exists():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in UNIT_COLUMNS.items()})
    return pd.read_parquet(path).astype(UNIT_COLUMNS)


def add_units(
    seed: int,
    world: World,
    units: pd.DataFrame,
    sends: pd.DataFrame,
    first_new_day: int,
    *,
    batch: int | None = None,
    first_order_id: int | None = None,
    received: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`units` with the sends not received before appended as one new batch, their responses drawn.

    Sends to persons `world` does not hold are left out: a chunk of a larger world (generator.py) takes the
    sends to its persons, with the world-wide `batch` number and `first_order_id` (the next response order
    id after the chunks before) and the units the whole world `received` before (a sent person whose world person
    moved to another chunk since is not a new unit); by default all three follow `units`."""
    person_idx = pd.Index(world.persons["true_person_id"]).get_indexer(sends["true_person_id"])
    sends = sends[SENDS_COLUMNS].assign(person_idx=person_idx).loc[person_idx >= 0]
    before = units if received is None else received
    seen = set(zip(before["experiment"], before["person_id"], strict=True))
    is_new = np.array([key not in seen for key in zip(sends["experiment"], sends["person_id"], strict=True)], bool)
    fresh = sends.loc[is_new]
    fresh = fresh.drop_duplicates(["experiment", "person_id"]).sort_values(["experiment", "person_id"])
    if fresh.empty:
        return units
    if batch is None:
        batch = int(units["batch"].max()) + 1 if len(units) else 0
    fresh = fresh.assign(
        effective_from=np.maximum(fresh["assigned_day"].to_numpy() + 1, first_new_day).astype(float), batch=batch
    )
    drawn = pd.concat(
        [_draw_responses(seed, world, part) for _, part in fresh.groupby("experiment", sort=True)]
    )
    next_id = RESPONSE_ORDER_ID_BASE + 1 + int(units["is_applied"].sum()) if first_order_id is None else first_order_id
    applied = drawn["is_applied"].to_numpy()
    drawn["order_id"] = np.where(applied, next_id + np.cumsum(applied) - 1, np.nan)
    return pd.concat([units, drawn[list(UNIT_COLUMNS)]], ignore_index=True).astype(UNIT_COLUMNS)


def _draw_responses(seed: int, world: World, units: pd.DataFrame) -> pd.DataFrame:
    """One experiment's units with their potential response and whether it happens."""
    experiment = str(units["experiment"].iloc[0])
    rng = np.random.default_rng([seed, 21, zlib.crc32(experiment.encode())])
    n = len(world.persons)
    respond_u, time_u, amount_u = rng.random(n), rng.random(n), rng.random(n)
    person = units["person_idx"].to_numpy(dtype=np.int64)
    response_t = units["effective_from"].to_numpy() + time_u[person] * RESPONSE_WINDOW_DAYS
    usual = world.purchases.groupby("person_idx")["amount"].mean()
    typical = usual.reindex(person).fillna(float(world.purchases["amount"].median())).to_numpy()
    # a person sent twice in one experiment (two warehouse ids for one person) answers once
    is_eligible = ~pd.Series(person).duplicated().to_numpy() & _can_order(world, person, response_t)
    would_respond = respond_u[person] < RESPONSE_RATE
    return units.assign(
        would_respond=would_respond,
        is_eligible=is_eligible,
        response_t=response_t,
        response_amount=np.round(typical * (0.7 + 0.6 * amount_u[person]), 2),
        is_applied=would_respond & is_eligible & (units["arm"].to_numpy() == "treatment"),
    )


def _primary_accounts(world: World) -> pd.DataFrame:
    return world.accounts[~world.accounts["is_duplicate"]].set_index("person_idx")


def _can_order(world: World, person: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Whether the person can order online at t: their shop account is open, or they have none yet (they open
    one to order). Someone whose account was closed, or who opens it only later, does not answer."""
    primary = _primary_accounts(world)
    created = primary["created_day"].reindex(person).to_numpy()
    deleted = primary["deleted_day"].reindex(person).to_numpy()
    return np.isnan(created) | ((created < t) & (t < deleted))


def with_responses(seed: int, world: World, units: pd.DataFrame) -> World:
    """The world with every applied response added as a shop order (orders and items), batch by batch; a
    responder without a shop account opens one just before (customers and accounts)."""
    applied = units[units["is_applied"]]
    for batch, part in applied.groupby("batch", sort=True):
        accounts, new_accounts = _ordering_accounts(seed, world, part, int(batch))
        versions = customer_versions_for(np.random.default_rng([seed, 23, int(batch)]), world, new_accounts)
        purchases = pd.DataFrame(
            {
                "person_idx": part["person_idx"].to_numpy(dtype=np.int64),
                "t": part["response_t"].to_numpy(),
                "amount": part["response_amount"].to_numpy(),
                "is_online": True,
            }
        )
        orders, items = orders_for(
            np.random.default_rng([seed, 22, int(batch)]), purchases, accounts, world, int(part["order_id"].min())
        )
        # the ids add_units gave the applied responses are the ids the orders get
        assert (orders["order_id"].to_numpy() == part["order_id"].to_numpy()).all()
        world = replace(
            world,
            accounts=pd.concat([world.accounts, new_accounts], ignore_index=True),
            customers=pd.concat([world.customers, versions], ignore_index=True),
            orders=pd.concat([world.orders, orders], ignore_index=True),
            order_items=pd.concat([world.order_items, items], ignore_index=True),
        )
    return world


def _ordering_accounts(seed: int, world: World, part: pd.DataFrame, batch: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One account per responding person of a batch (the primary, or one opened by an earlier response, or a
    new one numbered after the person's first response order), and the new ones."""
    first = part.drop_duplicates("person_idx")
    person = first["person_idx"].to_numpy(dtype=np.int64)
    primary = _primary_accounts(world)["customer_id"].reindex(person).to_numpy()
    new = first[np.isnan(primary)]
    rng = np.random.default_rng([seed, 24, batch])
    new_accounts = pd.DataFrame(
        {
            "person_idx": new["person_idx"].to_numpy(dtype=np.int64),
            "created_day": new["response_t"].to_numpy() - rng.uniform(2, 30, len(new)) / 1440,
            "deleted_day": np.inf,
            "is_duplicate": False,
            "customer_id": (RESPONSE_CUSTOMER_ID_BASE + new["order_id"].to_numpy() - RESPONSE_ORDER_ID_BASE).astype(
                np.int64
            ),
        }
    )
    accounts = pd.DataFrame({"person_idx": person, "customer_id": primary, "is_duplicate": False, "created_day": 0.0})
    accounts = accounts.dropna(subset=["customer_id"])
    accounts = pd.concat([accounts, new_accounts[list(accounts.columns)]], ignore_index=True)
    return accounts.astype({"customer_id": np.int64}), new_accounts


def write_units(truth: Path, units: pd.DataFrame) -> None:
    writers.write_parquet(truth / RESPONSES_FILE, pa.Table.from_pandas(units, preserve_index=False))


def sends_from_home(assignment_files: list[Path], pii_db: Path, record_persons: Path, start_day: str) -> pd.DataFrame:
    """The syncs' assignments as sends to the world's persons (SENDS_COLUMNS).

    A warehouse person stands for the world person most of its person records (CRM contacts, shop customers,
    POS transactions, as listed in the pii file) belong to; one whose records the world does not know (a
    record added by hand) is not sent to. `start_day` is the world's first day (generator.json's `start`).
    """
    if not assignment_files or not pii_db.exists():
        return pd.DataFrame(columns=SENDS_COLUMNS)
    con = duckdb.connect()
    try:
        con.execute(f"attach '{pii_db}' as pii (read_only)")
        files = [str(path) for path in assignment_files]
        return con.execute(
            """
            with assigned as (
                select experiment, person_id, arg_min(arm, first_assigned_date) as arm,
                       min(first_assigned_date) as assigned_date
                from read_parquet(?, union_by_name = true)
                group by experiment, person_id
            ),
            votes as (
                select records.person_id, truth.true_person_id, count(*) as records
                from pii.source_records as records
                inner join read_parquet(?) as truth using (source_entity, source_record_id)
                group by all
            ),
            world_person as (
                select person_id, first(true_person_id order by records desc, true_person_id) as true_person_id
                from votes group by person_id
            )
            select assigned.experiment, assigned.person_id, assigned.arm,
                   datediff('day', cast(? as date), assigned.assigned_date) as assigned_day,
                   world_person.true_person_id
            from assigned
            inner join world_person using (person_id)
            order by all
            """,
            [files, str(record_persons), start_day],
        ).df()
    finally:
        con.close()


def true_conversion_lift(truth: Path, experiment: str, start: date, window_days: int) -> tuple[float, int]:
    """The experiment's true effect on "converted within window_days": the mean over its units of (converted if
    treated) - (converted if not), and the number of units; what a readout of treatment against control
    estimates (its `conversion_<window_days>d`).

    Without treatment a unit converts when the world's own purchases hold a kept (completed) one dated in
    assignment day + 1 .. + window_days; if treated, also when it would answer, could order, and the answer is
    dated in that window and kept (an answer is an order, cancelled or refunded at the world's rates).

    Close to, not exactly, what the readout sees: this uses each order's final status, while a readout soon after
    the window still counts an order refunded later (refunds come 5-30 days after completion), in both arms;
    the difference is under 0.01 on the demo, well inside a readout's interval."""
    units = read_units(truth)
    units = units[units["experiment"] == experiment].reset_index(drop=True)
    origin = pd.Timestamp(start)
    assigned = origin + pd.to_timedelta(units["assigned_day"], unit="D")
    window_end = assigned + pd.Timedelta(days=window_days)
    persons = pd.read_parquet(truth / "persons.parquet")["true_person_id"].to_numpy()
    purchases = pd.read_parquet(truth / "purchases.parquet")
    answers = set(units["order_id"].dropna().astype("int64").astype(str))
    own = purchases[~purchases["source_record_id"].isin(answers) & (purchases["status"] == "completed")]
    own = own.assign(day=own["purchased_at"].dt.tz_localize(None).dt.normalize())
    probe = pd.DataFrame(
        {"unit": units.index, "true_person_id": persons[units["person_idx"]], "after": assigned, "until": window_end}
    )
    joined = probe.merge(own[["true_person_id", "day"]], on="true_person_id")
    in_window = joined[(joined["day"] > joined["after"]) & (joined["day"] <= joined["until"])]
    converted = units.index.isin(in_window["unit"])
    answer_day = (origin + pd.to_timedelta(units["response_t"], unit="D")).dt.normalize()
    would_answer = units["would_respond"] & units["is_eligible"] & (answer_day <= window_end)
    kept = 1 - CANCEL_RATE - REFUND_RATE
    return float((would_answer & ~converted).mean() * kept), len(units)
