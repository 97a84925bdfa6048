"""Demo source systems of a fictional retailer, with ground truth (docs/contracts.md §2).

`generate(out, customers, days, seed, start)` writes `out/systems/` (shop.sqlite and daily crm/web/email/pos
files), `out/truth/` and `out/generator.json`. `advance(out, days)` appends days: it rebuilds the same
world from generator.json, writes only the new daily files and brings shop.sqlite and truth to the new end
state. The world does not depend on the number of days written, so generate(D) + advance(1) gives the same
files as generate(D + 1). A world of more than `chunk_customers` customers is built and written chunk by chunk
(each chunk a world from its own streams, its ids after those of the chunks before), so memory follows the
chunk, not the world. See sources/README.md for the model, the chunks and the noise rates.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from touchpoint.ingest.contract import ENTITY_SPECS

from . import activity, journeys, people, population, records, treatment, writers
from .consents import consent_events, consent_table
from .world import CANCEL_RATE, REFUND_RATE, RETURN_RATE, Chunk, Shared, World, build_world

# 2: known channel and campaign effects (journeys.py) and UTM tags on email landing pages; a folder written by
# version 1 cannot be advanced with them (its earlier days would lack them).
GENERATOR_VERSION = 2
WEB_BLOCK_DAYS = 61
# A world of more customers is built and written in chunks of this many, each from its own streams: peak RSS
# grows with the chunk, not the world (one chunk of 100k needed 3.8 GB; see sources/README.md "Speed").
CHUNK_CUSTOMERS = 50_000
_CHUNK_STREAM = 0x43484E4B  # entropy word of the chunk seeds ("CHNK"), so they are no stream of the world's
TRUTH_FUTURE_DAYS = 365
# The demo systems write the landing contract's columns, in its order (ingest/contract.py is their one list).
CRM_COLUMNS = list(ENTITY_SPECS["crm_contacts"].column_names)
CUSTOMER_COLUMNS = list(ENTITY_SPECS["shop_customers"].column_names)
WEB_COLUMNS = [
    "event_id",
    "occurred_at",
    "event_type",
    "anonymous_id",
    "customer_id",
    "session_id",
    "page_url",
    "product_id",
    "device_type",
    "channel",
]
EMAIL_COLUMNS = ["event_id", "occurred_at", "email", "event_type", "campaign_id"]
POS_COLUMNS = ["transaction_id", "purchased_at", "total_amount", "store_id", "loyalty_id", "phone", "email"]


class GeneratorError(RuntimeError):
    """The output folder or its generator.json cannot be used."""


@dataclass(frozen=True)
class GenerateSummary:
    out: Path
    first_day: date  # first day of the whole generated range
    last_day: date  # last generated day (the natural as-of)
    days_written: int  # daily files written by this call (per source)
    rows: dict[str, int] = field(default_factory=dict)  # rows written per entity by this call
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def generate(
    out: Path,
    customers: int = 10_000,
    days: int = 730,
    seed: int = 42,
    start: date = date(2024, 7, 1),
    chunk_customers: int = CHUNK_CUSTOMERS,
    on_chunk: Callable[[int, int], None] | None = None,
) -> GenerateSummary:
    """Write the demo source systems for `days` days from `start` into `out` (replacing what was there).

    More than `chunk_customers` customers are built and written in chunks of that many (kept in
    generator.json, so `advance` rebuilds the same chunks); a world of at most that many is one chunk.
    `on_chunk(done, chunks)` is called after each chunk, for a caller that shows progress."""
    if customers < 1 or days < 1 or chunk_customers < 1:
        raise GeneratorError(
            f"customers, days and chunk_customers must be positive (got {customers}, {days}, {chunk_customers})"
        )
    out = Path(out)
    for sub in ("systems", "truth"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    (out / "generator.json").unlink(missing_ok=True)
    chunk = min(chunk_customers, customers)
    return _run(
        out,
        seed=seed,
        customers=customers,
        chunk_customers=chunk,
        start=start,
        days=days,
        first_new_day=0,
        on_chunk=on_chunk,
    )


def advance(
    out: Path,
    days: int = 1,
    sends: pd.DataFrame | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> GenerateSummary:
    """Append `days` more days to an existing output (new daily files, shop.sqlite and truth updated).

    `sends` (treatment.SENDS_COLUMNS, e.g. from `treatment.sends_from_home`): the people the syncs assigned to
    experiments since the world last heard; the treated among them answer in the new days (treatment.py).
    """
    if days < 1:
        raise GeneratorError(f"days must be positive (got {days})")
    meta = read_meta(Path(out))
    return _run(
        Path(out),
        seed=meta["seed"],
        customers=meta["customers"],
        chunk_customers=meta.get("chunk_customers", meta["customers"]),  # absent: one chunk
        start=date.fromisoformat(meta["start"]),
        days=meta["days"] + days,
        first_new_day=meta["days"],
        sends=sends,
        on_chunk=on_chunk,
    )


def read_meta(out: Path) -> dict:
    path = Path(out) / "generator.json"
    if not path.exists():
        raise GeneratorError(f"{path} not found: run generate first")
    meta = json.loads(path.read_text())
    if meta.get("generator_version") != GENERATOR_VERSION:
        raise GeneratorError(
            f"{path} was written by generator version {meta.get('generator_version')}, "
            f"this is version {GENERATOR_VERSION}: regenerate"
        )
    return meta


def last_day(out: Path) -> date:
    """The last generated day: the natural as-of date for a run over this output."""
    meta = read_meta(Path(out))
    return date.fromisoformat(meta["start"]) + timedelta(days=meta["days"] - 1)


@dataclass(frozen=True)
class _DailyRecords:
    """What the daily files hold, kept so the truth can map every written record to its person."""

    crm: pd.DataFrame  # CRM contact versions written (valid before the end)
    web: pd.DataFrame  # every web event of the whole range, in file order
    web_ids: np.ndarray  # event_id of each row of `web`
    email_ids: np.ndarray  # event_id of each written email event
    email_person: np.ndarray  # person index of each written email event
    pos: pd.DataFrame  # POS transactions written


def chunk_seed(seed: int, index: int) -> int:
    """The stream seed of chunk `index` of a world: the world's seed for the first chunk (so a world of one chunk
    is the world as it always was), else one derived from (seed, index)."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed, _CHUNK_STREAM, index]).generate_state(1, np.uint64)[0])


@dataclass
class _DayNumbers:
    """Per day, how many web events, web sessions and email events the chunks before numbered: their ids
    restart every day, so a chunk's ids of a day follow those of the chunks before it."""

    web_events: np.ndarray
    web_sessions: np.ndarray
    email_events: np.ndarray

    @classmethod
    def empty(cls, days: int) -> _DayNumbers:
        return cls(*(np.zeros(days, dtype=np.int64) for _ in range(3)))


@dataclass
class _ChunkRun:
    """How one chunk is drawn and written: its stream seed, the world's seed (for the known effects, the same
    in every chunk), its ids' offsets, and whether its daily rows are added to files a chunk before wrote."""

    seed: int
    world_seed: int
    chunk: Chunk
    numbers: _DayNumbers

    @property
    def append(self) -> bool:
        return self.chunk.index > 0


def _run(
    out: Path,
    *,
    seed: int,
    customers: int,
    chunk_customers: int,
    start: date,
    days: int,
    first_new_day: int,
    sends: pd.DataFrame | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> GenerateSummary:
    t0 = time.perf_counter()
    new_days = range(first_new_day, days)
    systems, truth = out / "systems", out / "truth"
    units = treatment.read_units(truth)
    responses = _Responses(units, sends, first_new_day)
    shop = writers.ShopDatabase(systems / "shop.sqlite")
    parts = writers.ParquetParts(truth)
    rows: dict[str, int] = {}
    try:
        sizes = [min(chunk_customers, customers - lo) for lo in range(0, customers, chunk_customers)]
        chunk, numbers, shared = Chunk(count=len(sizes)), _DayNumbers.empty(days), Shared()
        for index, size in enumerate(sizes):
            run = _ChunkRun(chunk_seed(seed, index), seed, replace(chunk, index=index), numbers)
            world = build_world(run.seed, size, run.chunk, shared)
            chunk = _next_chunk(run.chunk, world, size)
            for entity, n in _run_chunk(systems, parts, shop, run, world, start, days, new_days, responses).items():
                rows[entity] = rows.get(entity, 0) + n
            del world  # the next chunk's world is drawn in the memory this one held
            if on_chunk is not None:
                on_chunk(index + 1, len(sizes))
        shop.close()
    except BaseException:
        shop.abandon()
        raise
    finally:
        parts.close()
    writers.write_parquet(truth / "channel_effects.parquet", _channel_truth(seed))
    writers.write_parquet(truth / "campaign_effects.parquet", _truth_campaigns(seed, start, float(days)))
    treatment.write_units(truth, responses.all_units())
    _write_params(truth / "params.json", seed, customers, start)
    _write_meta(out / "generator.json", seed, customers, start, days, chunk_customers)
    return GenerateSummary(
        out=out,
        first_day=start,
        last_day=start + timedelta(days=days - 1),
        days_written=len(new_days),
        rows=rows,
        seconds=time.perf_counter() - t0,
    )


def _next_chunk(chunk: Chunk, world: World, size: int) -> Chunk:
    """The offsets of the chunk after `chunk` (the base world's records: the sends' answers have their own ids)."""
    return replace(
        chunk,
        person_offset=chunk.person_offset + size,
        customer_offset=chunk.customer_offset + len(world.accounts),
        order_offset=chunk.order_offset + len(world.orders),
        contact_offset=chunk.contact_offset + len(world.contact_index),
        transaction_offset=chunk.transaction_offset + len(world.pos),
    )


def _run_chunk(
    systems: Path,
    parts: writers.ParquetParts,
    shop: writers.ShopDatabase,
    run: _ChunkRun,
    world: World,
    start: date,
    days: int,
    new_days: range,
    responses: _Responses,
) -> dict[str, int]:
    """Write one chunk: its daily rows, then (with the answers to the sends) its shop rows and truth."""
    end = float(days)  # everything strictly before day index `days` exists in the systems
    daily, rows = _write_daily_files(systems, run, world, start, days, new_days)
    # the sends' answers are shop orders added after the daily files: the base world is drawn without them
    world = responses.answer(run, world)
    tables, shop_rows = _shop_state(start, world, end, with_products=run.chunk.index == 0)
    shop.add(tables)
    rows.update(shop_rows)
    _write_truth(parts, start, world, end, daily)
    return rows


class _Responses:
    """The sends' units of the whole world, handed to each chunk for its persons (person_idx local to it) and
    collected back (person_idx of the world); one batch number and one run of answer order ids for the world."""

    def __init__(self, units: pd.DataFrame, sends: pd.DataFrame | None, first_new_day: int) -> None:
        self.units, self.sends, self.first_new_day = units, sends, first_new_day
        self.batch = int(units["batch"].max()) + 1 if len(units) else 0
        self.next_order_id = treatment.RESPONSE_ORDER_ID_BASE + 1 + int(units["is_applied"].sum())
        self.parts: list[pd.DataFrame] = []

    def answer(self, run: _ChunkRun, world: World) -> World:
        lo, hi = run.chunk.person_offset, run.chunk.person_offset + len(world.persons)
        idx = self.units["person_idx"].to_numpy()
        local = self.units[(idx >= lo) & (idx < hi)]
        local = local.assign(person_idx=local["person_idx"] - lo).reset_index(drop=True)
        if self.sends is not None:
            before = int(local["is_applied"].sum())
            local = treatment.add_units(
                run.seed,
                world,
                local,
                self.sends,
                self.first_new_day,
                batch=self.batch,
                first_order_id=self.next_order_id,
                received=self.units,
            )
            self.next_order_id += int(local["is_applied"].sum()) - before
        self.parts.append(local.assign(person_idx=local["person_idx"] + lo))
        return treatment.with_responses(run.seed, world, local)

    def all_units(self) -> pd.DataFrame:
        units = pd.concat(self.parts, ignore_index=True) if self.parts else self.units
        return units.astype(treatment.UNIT_COLUMNS)


def _write_daily_files(
    systems: Path, run: _ChunkRun, world: World, start: date, days: int, new_days: range
) -> tuple[_DailyRecords, dict[str, int]]:
    """Write the CRM, web, email and POS files of `new_days`; return what they hold and the rows per entity.

    The order of the steps is the order of the random draws (CRM with email, then web): changing it would
    change every world generated for a seed.
    """
    end = float(days)
    seed, append = run.seed, run.append
    rows: dict[str, int] = {}
    contacts, unsub = _crm_versions(seed, world, start, days, run.world_seed)
    crm = contacts[contacts["valid_day"] < end]
    rows["crm_contacts"] = writers.write_daily_csv(
        systems / "crm",
        "contacts",
        start,
        _crm_table(start, crm),
        np.floor(crm["valid_day"].to_numpy()),
        new_days,
        append,
    )

    web = _numbered_web(activity.web_events(seed, world, days, run.world_seed), run.numbers, days)
    web_ids = _web_event_ids(start, web)
    rows["web_events"] = _write_web_files(systems / "web", start, web, web_ids, days, new_days, append)

    email_ids, email_table, email_days, email_person = _email_table(
        start, unsub["_events"], end, run.numbers.email_events
    )
    rows["email_events"] = writers.write_daily_csv(
        systems / "email", "events", start, email_table, email_days, new_days, append
    )

    consents = consent_events(seed, world, days)
    consents = consents[consents["day"] < end]
    rows["consent_events"] = writers.write_daily_csv(
        systems / "crm", "consents", start, consent_table(start, consents), np.floor(consents["day"].to_numpy()),
        new_days, append,
    )

    pos = world.pos[world.pos["t"] < end]
    rows["pos_transactions"] = writers.write_daily_csv(
        systems / "pos",
        "transactions",
        start,
        _pos_table(start, pos),
        np.floor(pos["t"].to_numpy()),
        new_days,
        append,
    )
    return _DailyRecords(crm, web, web_ids, email_ids, email_person, pos), rows


def _numbered_web(web: pd.DataFrame, numbers: _DayNumbers, days: int) -> pd.DataFrame:
    """The chunk's web events with event and session numbers after those the chunks before gave each day;
    `numbers` then counts this chunk's too."""
    day = web["day"].to_numpy().astype(np.int64)
    sessions = np.zeros(days, dtype=np.int64)
    np.maximum.at(sessions, day, web["session_seq"].to_numpy() + 1)
    web["event_seq"] = web["event_seq"].to_numpy() + numbers.web_events[day]
    web["session_seq"] = web["session_seq"].to_numpy() + numbers.web_sessions[day]
    numbers.web_events += np.bincount(day, minlength=days)[:days]
    numbers.web_sessions += sessions
    return web


def _write_web_files(
    folder: Path, start: date, web: pd.DataFrame, web_ids: np.ndarray, days: int, new_days: range, append: bool
) -> int:
    """Write the web events of `new_days` as daily JSON lines; return the number of events written."""
    web_days = web["day"].to_numpy()
    written = 0
    # JSON lines are built a block of days at a time to bound memory; untouched blocks are skipped.
    for block in range(0, days, WEB_BLOCK_DAYS):
        block_days = [d for d in new_days if block <= d < block + WEB_BLOCK_DAYS]
        if not block_days:
            continue
        lo, hi = np.searchsorted(web_days, [block, block + WEB_BLOCK_DAYS])
        lines = writers.jsonl_lines(_web_table(start, web.iloc[lo:hi], web_ids[lo:hi]))
        written += writers.write_daily_jsonl(folder, "events", start, lines, web_days[lo:hi], block_days, append)
    return written


def _write_meta(path: Path, seed: int, customers: int, start: date, days: int, chunk_customers: int) -> None:
    """generator.json: what `advance` needs to rebuild the same world and append days to it (the chunk size
    only for a world of several chunks: a world of one is written as before chunks existed)."""
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "customers": customers,
        "start": start.isoformat(),
        "days": days,
    }
    if chunk_customers < customers:
        meta["chunk_customers"] = chunk_customers
    path.write_text(json.dumps(meta, indent=2) + "\n")


def _crm_versions(
    seed: int, world: World, start: date, days: int, world_seed: int
) -> tuple[pd.DataFrame, dict]:
    """CRM versions including opt-out versions that follow email unsubscribes."""
    events, unsubscribed = activity.email_events(seed, world, start, days, world_seed)
    base = world.contacts.sort_values(["contact_id", "valid_day"], kind="stable")
    if len(unsubscribed):
        latest = pd.merge_asof(
            unsubscribed.sort_values("valid_day"),
            base.sort_values("valid_day")
            .drop(columns="valid_day")
            .assign(_vd=base.sort_values("valid_day")["valid_day"]),
            left_on="valid_day",
            right_on="_vd",
            by="contact_id",
            direction="backward",
        )
        latest = latest.drop(columns="_vd").assign(email_opt_in=False, version=9)
        base = pd.concat([base, latest[base.columns]], ignore_index=True)
    base = base.sort_values(["valid_day", "contact_id"], kind="stable").reset_index(drop=True)
    return base, {"_events": events}


def _crm_table(start: date, crm: pd.DataFrame) -> pa.Table:
    cols = {c: crm[c].to_numpy(dtype=object) for c in CRM_COLUMNS if c not in ("email_opt_in", "updated_at")}
    cols["email_opt_in"] = np.where(crm["email_opt_in"].to_numpy(dtype=bool), "true", "false").astype(object)
    cols["updated_at"] = writers.timestamps(start, crm["valid_day"].to_numpy())
    return writers.to_table({c: cols[c] for c in CRM_COLUMNS})


def _web_event_ids(start: date, web: pd.DataFrame) -> np.ndarray:
    tags = writers.day_tags(start, web["day"].to_numpy())
    seq = writers.zero_padded(web["event_seq"].to_numpy(), 6)
    return np.char.add(np.char.add("E", tags), np.char.add("-", seq)).astype(object)


def _web_table(start: date, web: pd.DataFrame, event_id: np.ndarray) -> pa.Table:
    tags = writers.day_tags(start, web["day"].to_numpy())
    session_id = np.char.add(
        np.char.add("S", tags), np.char.add("-", writers.zero_padded(web["session_seq"].to_numpy(), 5))
    ).astype(object)
    etype = web["etype"].to_numpy()
    pid = web["product_id"].to_numpy()
    pid_text = pid.astype(str).astype(object)
    url = np.select(
        [
            etype == activity.PAGE_VIEW,
            etype == activity.LOGIN,
            etype == activity.PRODUCT_VIEW,
            etype == activity.ADD_TO_CART,
            etype == activity.CHECKOUT,
        ],
        [activity.PAGES[web["page"].to_numpy()], "/login", "/p/" + pid_text, "/cart", "/checkout"],
        "/checkout/confirmation",
    )
    url = _with_campaign_tags(start, web, url)
    cid = web["customer_id"].to_numpy()
    table = writers.to_table(
        {
            "event_id": event_id,
            "occurred_at": writers.timestamps(start, web["t"].to_numpy()),
            "event_type": activity.EVENT_TYPES[etype],
            "anonymous_id": web["anonymous_id"].to_numpy(dtype=object),
            "customer_id": np.where(cid >= 0, cid.astype(str).astype(object), None),
            "session_id": session_id,
            "page_url": url,
            "product_id": np.where(pid > 0, pid_text, None),
            "device_type": web["device_type"].to_numpy(dtype=object),
            "channel": activity.CHANNELS[web["channel"].to_numpy()],
        }
    )
    return table


def _with_campaign_tags(start: date, web: pd.DataFrame, url: np.ndarray) -> np.ndarray:
    """The landing page of a session from the email channel carries the UTM tags of the latest campaign sent
    before it (none before the first campaign), as a newsletter link would: the warehouse reads the campaign
    from utm_campaign. No random draw: the other columns and files are as before."""
    t = web["t"].to_numpy()
    landing = np.isin(web["pos"].to_numpy(), (0, 100)) & (
        activity.CHANNELS[web["channel"].to_numpy()] == "email"
    )
    first_tuesday = (1 - start.weekday()) % 7
    sent_hours = 10 / 24
    weeks = np.floor((t - first_tuesday - sent_hours) / 7)
    tagged = landing & (weeks >= 0)
    campaign_day = (first_tuesday + 7 * np.maximum(weeks, 0)).astype(np.int64)
    tags = np.char.add(
        "?utm_source=newsletter&utm_medium=email&utm_campaign=CMP", writers.day_tags(start, campaign_day)
    ).astype(object)
    return np.where(tagged, url.astype(object) + tags, url)


def _email_table(
    start: date, events: pd.DataFrame, end: float, numbered: np.ndarray
) -> tuple[np.ndarray, pa.Table, np.ndarray, np.ndarray]:
    """The email events before `end`, numbered per day after the `numbered` of the chunks before (which then
    counts these too)."""
    ev = events[events["t"] < end]
    day = np.floor(ev["t"].to_numpy()).astype(np.int64)
    seq = ev.groupby(day).cumcount().to_numpy() + numbered[day]
    numbered += np.bincount(day, minlength=len(numbered))[: len(numbered)]
    event_id = np.char.add(
        np.char.add("M", writers.day_tags(start, day)), np.char.add("-", writers.zero_padded(seq, 6))
    ).astype(object)
    campaign = np.char.add("CMP", writers.day_tags(start, ev["campaign"].to_numpy())).astype(object)
    table = writers.to_table(
        {
            "event_id": event_id,
            "occurred_at": writers.timestamps(start, ev["t"].to_numpy()),
            "email": ev["email"].to_numpy(dtype=object),
            "event_type": activity.EMAIL_TYPES[ev["etype"].to_numpy().astype(np.int64)],
            "campaign_id": campaign,
        }
    )
    return event_id, table, day, ev["person_idx"].to_numpy()


def _pos_table(start: date, pos: pd.DataFrame) -> pa.Table:
    return writers.to_table(
        {
            "transaction_id": pos["transaction_id"].to_numpy(dtype=object),
            "purchased_at": writers.timestamps(start, pos["t"].to_numpy()),
            "total_amount": writers.money(pos["total_amount"].to_numpy()),
            "store_id": pos["store_id"].to_numpy(dtype=object),
            "loyalty_id": pos["loyalty_id"].to_numpy(dtype=object),
            "phone": pos["phone"].to_numpy(dtype=object),
            "email": pos["email"].to_numpy(dtype=object),
        }
    )


def _order_state(orders: pd.DataFrame, end: float) -> tuple[np.ndarray, np.ndarray]:
    """Status and updated_at (days) of each order as seen at `end`."""
    final = orders["status_final"].to_numpy(dtype=object)
    t, done, fin = orders["t"].to_numpy(), orders["completed_day"].to_numpy(), orders["final_day"].to_numpy()
    status = np.where(
        fin < end, final, np.where((final != "cancelled") & (done < end), "completed", "placed")
    )
    updated = np.where(fin < end, fin, np.where((final != "cancelled") & (done < end), done, t))
    return status.astype(object), updated


def _shop_state(
    start: date, world: World, end: float, with_products: bool = True
) -> tuple[dict[str, list[tuple]], dict[str, int]]:
    """The shop's rows at `end` (the catalogue only `with_products`: every chunk of a world shares the first's)."""
    cv = world.customers
    cv = cv[(cv["valid_day"] < end) & (cv["created_day"] < end) & (cv["deleted_day"] >= end)]
    cv = cv.sort_values(["customer_id", "valid_day"], kind="stable").drop_duplicates(
        "customer_id", keep="last"
    )
    created = writers.timestamps(start, cv["created_day"].to_numpy())
    updated = writers.timestamps(start, cv["valid_day"].to_numpy())
    customers = pd.DataFrame({c: cv[c].to_numpy(dtype=object) for c in CUSTOMER_COLUMNS[1:-2]})
    customers.insert(0, "customer_id", cv["customer_id"].to_numpy())
    customers["created_at"], customers["updated_at"] = created, updated

    orders = world.orders[world.orders["t"] < end]
    status, upd = _order_state(orders, end)
    order_rows = pd.DataFrame(
        {
            "order_id": orders["order_id"].to_numpy(),
            "customer_id": orders["customer_id"].to_numpy(),
            "ordered_at": writers.timestamps(start, orders["t"].to_numpy()),
            "total_amount": orders["total_amount"].to_numpy(),
            "status": status,
            "currency": "EUR",
            "updated_at": writers.timestamps(start, upd),
        }
    )
    items = world.order_items[world.order_items["t"] < end].drop(columns="t")
    products = world.products.drop(columns="category_idx").assign(
        updated_at=writers.timestamps(start, np.full(len(world.products), -30.0))
    )
    if not with_products:
        products = products.iloc[:0]

    def tuples(df: pd.DataFrame) -> list[tuple]:
        return [
            tuple(
                None
                if (isinstance(v, float) and np.isnan(v))
                else (v.item() if isinstance(v, np.generic) else v)
                for v in row
            )
            for row in df.itertuples(index=False, name=None)
        ]

    tables = {
        "customers": tuples(customers),
        "orders": tuples(order_rows),
        "order_items": tuples(items),
        "products": tuples(products),
    }
    counts = {
        "shop_customers": len(customers),
        "shop_orders": len(order_rows),
        "shop_order_items": len(items),
        "shop_products": len(products),
    }
    return tables, counts


def _write_truth(
    parts: writers.ParquetParts, start: date, world: World, end: float, daily: _DailyRecords
) -> None:
    """truth/ of one chunk: who each written record belongs to, who the people are, every purchase up to a year
    on (rows in order within the chunk, the chunks one after the other)."""
    pid = world.persons["true_person_id"].to_numpy(dtype=object)
    parts.write("record_persons.parquet", _record_persons(world, end, daily, pid))
    persons = _truth_persons(start, world, end, pid)
    parts.write("persons.parquet", pa.Table.from_pandas(persons, preserve_index=False))
    purchases = _truth_purchases(start, world, end, pid)
    parts.write("purchases.parquet", pa.Table.from_pandas(purchases, preserve_index=False))


def _channel_truth(seed: int) -> pa.Table:
    """The known effects of channels on conversion: the world's, the same in every chunk."""
    return pa.Table.from_pandas(journeys.channel_truth(seed), preserve_index=False)


def _truth_campaigns(seed: int, start: date, end: float) -> pa.Table:
    """One row per email campaign sent up to `end`: its id, send date and known click effect (journeys.py)."""
    days = np.array(activity.campaign_days(start, int(np.ceil(end))), dtype=np.int64)
    return pa.table(
        {
            "campaign_id": pa.array(np.char.add("CMP", writers.day_tags(start, days)).tolist(), type=pa.string()),
            "sent_on": pa.array(np.datetime64(start, "D") + days.astype("timedelta64[D]"), type=pa.date32()),
            "click_effect": pa.array([journeys.campaign_effect(seed, c) for c in range(len(days))], type=pa.float64()),
        }
    )


def _record_persons(world: World, end: float, daily: _DailyRecords, pid: np.ndarray) -> pa.Table:
    """source_entity, source_record_id -> true_person_id for every record the systems hold at `end`."""
    contacts = world.contact_index[world.contact_index["created_day"] < end]
    accounts = world.accounts[world.accounts["created_day"] < end].sort_values("customer_id")
    orders = world.orders[world.orders["t"] < end]
    parts = [
        ("crm_contacts", contacts["contact_id"].to_numpy(dtype=object), contacts["person_idx"].to_numpy()),
        (
            "shop_customers",
            accounts["customer_id"].astype(str).to_numpy(dtype=object),
            accounts["person_idx"].to_numpy(),
        ),
        (
            "shop_orders",
            orders["order_id"].astype(str).to_numpy(dtype=object),
            orders["person_idx"].to_numpy(),
        ),
        (
            "pos_transactions",
            daily.pos["transaction_id"].to_numpy(dtype=object),
            daily.pos["person_idx"].to_numpy(),
        ),
        ("web_events", daily.web_ids, daily.web["person_idx"].to_numpy()),
        ("email_events", daily.email_ids, daily.email_person),
    ]
    return writers.to_table(
        {
            "source_entity": np.concatenate(
                [np.full(len(ids), name, dtype=object) for name, ids, _ in parts]
            ),
            "source_record_id": np.concatenate([ids for _, ids, _ in parts]),
            "true_person_id": np.concatenate([pid[idx.astype(np.int64)] for _, _, idx in parts]),
        }
    )


def _truth_persons(start: date, world: World, end: float, pid: np.ndarray) -> pd.DataFrame:
    """One row per person: the latent buying process (what the ML stage estimates) and the true identity."""
    p, pe = world.persons, world.people
    return pd.DataFrame(
        {
            "true_person_id": p["true_person_id"],
            "latent_type": p["latent_type"],
            "acquired_at": pd.to_datetime(
                writers.timestamps(start, p["acquired_day"].to_numpy()).astype(str)
            ),
            "purchase_rate_per_day": p["purchase_rate_per_day"],
            "dropout_probability": p["dropout_probability"],
            "spend_nu": p["spend_nu"],
            "expected_spend": p["expected_spend"],
            "online_share": p["online_share"],
            "web_sessions_per_day": p["web_sessions_per_day"],
            "email_open_probability": p["email_open_probability"],
            "first_name": pe["first_name"],
            "last_name": pe["last_name"],
            "birth_date": pd.to_datetime(pe["birth_date"].astype(str)).dt.date,
            "email": pe["email"],
            "secondary_email": pe["secondary_email"],
            "phone_e164": pe["phone_e164"],
            "address_line1": pe["address_line1"],
            "city": pe["city"],
            "postcode": pe["postcode"],
            "country": pe["country"],
            "household_head_id": np.where(
                pe["household_head_idx"] >= 0, pid[np.maximum(pe["household_head_idx"].to_numpy(), 0)], None
            ),
            "moved_at": pd.to_datetime(
                np.where(
                    pe["moved"], writers.timestamps(start, np.where(pe["moved"], pe["moved_day"], 0.0)), None
                ).astype(object)
            ),
            "is_acquired": p["acquired_day"] < end,
        }
    )


def _truth_purchases(start: date, world: World, end: float, pid: np.ndarray) -> pd.DataFrame:
    """Online orders and POS sales up to TRUTH_FUTURE_DAYS after `end`, flagged when after the last day.

    The purchases after the last day are never written to the systems: they are what a model scored as of
    the last day should predict.
    """
    horizon = end + TRUTH_FUTURE_DAYS
    o = world.orders[world.orders["t"] < horizon]
    s = world.pos[world.pos["t"] < horizon]
    online_net = np.where(o["status_final"].to_numpy() == "completed", o["total_amount"].to_numpy(), 0.0)
    purchases = pd.DataFrame(
        {
            "true_person_id": np.concatenate([pid[o["person_idx"]], pid[s["person_idx"]]]),
            "t": np.concatenate([o["t"].to_numpy(), s["t"].to_numpy()]),
            "gross_amount": np.concatenate([o["total_amount"].to_numpy(), s["total_amount"].to_numpy()]),
            "net_amount": np.concatenate([online_net, s["total_amount"].to_numpy()]),
            "status": np.concatenate(
                [
                    o["status_final"].to_numpy(dtype=object),
                    np.where(s["is_return"], "returned", "completed").astype(object),
                ]
            ),
            "channel": np.concatenate(
                [np.full(len(o), "online", dtype=object), np.full(len(s), "store", dtype=object)]
            ),
            "source_entity": np.concatenate(
                [
                    np.full(len(o), "shop_orders", dtype=object),
                    np.full(len(s), "pos_transactions", dtype=object),
                ]
            ),
            "source_record_id": np.concatenate(
                [o["order_id"].astype(str).to_numpy(dtype=object), s["transaction_id"].to_numpy(dtype=object)]
            ),
        }
    ).sort_values(["t", "source_entity", "source_record_id"], kind="stable")
    purchases.insert(
        1, "purchased_at", pd.to_datetime(writers.timestamps(start, purchases["t"].to_numpy()).astype(str))
    )
    purchases["is_after_last_day"] = purchases["t"] >= end
    return purchases.drop(columns="t")


def _write_params(path: Path, seed: int, customers: int, start: date) -> None:
    params = {
        "seed": seed,
        "customers": customers,
        "start": start.isoformat(),
        "process": "BG/NBD purchases (lambda ~ Gamma(r, rate=alpha) per day; dropout after each purchase "
        "p ~ Beta(a, b)); spend Gamma-Gamma (z ~ Gamma(p, rate=nu), nu ~ Gamma(q, rate=gamma))",
        "acquisition_days": population.ACQUISITION_DAYS,
        "max_purchases_per_person": population.MAX_PURCHASES,
        "latent_types": population.type_params(),
        "orders": {"cancel_rate": CANCEL_RATE, "refund_rate": REFUND_RATE, "currency": "EUR"},
        "pos": {"return_rate": RETURN_RATE},
        "households": {
            "rate": people.HOUSEHOLD_RATE,
            "shared_email": people.SHARED_EMAIL_IN_HOUSEHOLD,
            "shared_phone": people.SHARED_PHONE_IN_HOUSEHOLD,
            "partner_share": people.PARTNER_SHARE,
        },
        "second_given_name_rate": people.SECOND_GIVEN_NAME_RATE,
        "moves": {"rate": people.MOVE_RATE},
        "secondary_email_rate": people.SECONDARY_EMAIL_RATE,
        "noise": records.NOISE_RATES,
        "web": {"login_rate": activity.LOGIN_RATE},
        "journeys": {
            "channel_session_share": dict(zip(journeys.CHANNELS, journeys.CHANNEL_P.tolist(), strict=True)),
            "channel_conversion_multiplier": dict(
                zip(journeys.CHANNELS, journeys.channel_multipliers(seed).tolist(), strict=True)
            ),
            "campaign_click_rate": journeys.CLICK_RATE,
            "campaign_effect_range": list(journeys.CAMPAIGN_EFFECT_RANGE),
            "campaign_window_days": journeys.CAMPAIGN_WINDOW_DAYS,
        },
        "treatment": {
            "response_rate": treatment.RESPONSE_RATE,
            "response_window_days": treatment.RESPONSE_WINDOW_DAYS,
            "applies_to": "the treatment arm of every experiment a sync assigned (truth/treatment_responses.parquet)",
        },
        "truth_future_days": TRUTH_FUTURE_DAYS,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(params, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
