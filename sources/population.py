"""The latent population and its buy-till-you-die purchase process (BG/NBD + Gamma-Gamma).

Per latent type: purchase rate lambda ~ Gamma(r, rate alpha) per day, dropout probability after each
purchase p ~ Beta(a, b), spend per purchase z ~ Gamma(p_spend, rate nu) with nu ~ Gamma(q, rate gamma),
so E[z | nu] = p_spend / nu. A person's first purchase is their acquisition; after every purchase they drop
out with probability p; otherwise the next purchase follows after Exp(lambda) days. Browsers never buy.

The process is simulated per person without a time horizon (at most MAX_PURCHASES purchases), so the
purchases before any date do not depend on how many days are written: this is what makes `advance`
consistent with a longer `generate`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from . import writers

MAX_PURCHASES = 400
ACQUISITION_DAYS = (
    730  # persons are acquired over this window from the start date (fixed: independent of days)
)


@dataclass(frozen=True)
class LatentType:
    name: str
    weight: float
    r: float  # Gamma shape of the purchase rate (per day)
    alpha: float  # Gamma rate of the purchase rate: E[lambda] = r / alpha
    a: float  # Beta(a, b) dropout probability after each purchase: E[p] = a / (a + b)
    b: float
    p: float  # Gamma-Gamma spend shape
    q: float  # shape of the per-person spend rate nu
    gamma: float  # rate of nu: E[z] = p * gamma / (q - 1)
    online_a: float  # Beta(online_a, online_b): share of purchases made online
    online_b: float
    web_sessions_per_day: float  # browsing sessions per day while active
    email_open_probability: float
    buys: bool = True


LATENT_TYPES: tuple[LatentType, ...] = (
    LatentType("loyal_high_value", 0.12, 3.0, 60.0, 2.0, 30.0, 6.0, 4.0, 60.0, 3, 3, 0.06, 0.45),
    LatentType("bargain_hunter", 0.18, 2.0, 40.0, 2.0, 12.0, 3.0, 5.0, 40.0, 4, 2, 0.05, 0.30),
    LatentType("occasional", 0.30, 1.5, 150.0, 2.0, 8.0, 4.0, 4.0, 45.0, 2, 2, 0.02, 0.20),
    LatentType("one_timer", 0.20, 1.0, 200.0, 30.0, 2.0, 3.0, 4.0, 40.0, 1, 1, 0.01, 0.10),
    LatentType("browser", 0.20, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1, 1, 0.04, 0.08, buys=False),
)


def type_params() -> list[dict[str, object]]:
    out = []
    for t in LATENT_TYPES:
        d = asdict(t)
        if not t.buys:
            for k in ("r", "alpha", "a", "b", "p", "q", "gamma", "online_a", "online_b"):
                d[k] = None
        out.append(d)
    return out


def draw_persons(rng: np.random.Generator, n: int, first_person: int = 1) -> pd.DataFrame:
    """One row per true person: latent type, acquisition time (days after start) and process parameters;
    true_person_id numbered from `first_person`."""
    weights = np.array([t.weight for t in LATENT_TYPES])
    type_idx = rng.choice(len(LATENT_TYPES), size=n, p=weights / weights.sum())
    col = {
        f: np.array([getattr(t, f) for t in LATENT_TYPES], dtype=float)[type_idx]
        for f in (
            "r",
            "alpha",
            "a",
            "b",
            "p",
            "q",
            "gamma",
            "online_a",
            "online_b",
            "web_sessions_per_day",
            "email_open_probability",
        )
    }
    buys = np.array([t.buys for t in LATENT_TYPES])[type_idx]
    lam = np.where(buys, rng.gamma(col["r"], 1.0 / col["alpha"]), 0.0)
    drop = np.where(buys, rng.beta(col["a"], col["b"]), 1.0)
    nu = rng.gamma(col["q"], 1.0 / col["gamma"])
    online = rng.beta(col["online_a"], col["online_b"])
    # Front-loaded acquisition: a launch cohort, then a steady trickle.
    acquired = ACQUISITION_DAYS * rng.random(n) ** 1.6
    return pd.DataFrame(
        {
            "true_person_id": writers.prefixed("P", np.arange(first_person, first_person + n), 7),
            "latent_type": np.array([t.name for t in LATENT_TYPES], dtype=object)[type_idx],
            "acquired_day": acquired,
            "purchase_rate_per_day": lam,
            "dropout_probability": drop,
            "spend_p": col["p"],
            "spend_nu": np.where(buys, nu, np.nan),
            "expected_spend": np.where(buys, col["p"] / nu, np.nan),
            "online_share": np.where(buys, online, np.nan),
            "web_sessions_per_day": col["web_sessions_per_day"] * rng.gamma(2.0, 0.5, n),
            "email_open_probability": np.clip(
                col["email_open_probability"] * rng.gamma(4.0, 0.25, n), 0, 0.95
            ),
            "buys": buys,
        }
    )


def simulate_purchases(rng: np.random.Generator, persons: pd.DataFrame) -> pd.DataFrame:
    """Every purchase of every person (no horizon): person_idx, t (days after start), amount, is_online."""
    n = len(persons)
    buys = persons["buys"].to_numpy()
    drop = persons["dropout_probability"].to_numpy()
    count = np.where(buys, np.minimum(rng.geometric(np.clip(drop, 1e-6, 1.0)), MAX_PURCHASES), 0)
    person_idx = np.repeat(np.arange(n), count)
    total = int(count.sum())
    lam = persons["purchase_rate_per_day"].to_numpy()[person_idx]
    gaps = rng.exponential(1.0, total) / np.maximum(lam, 1e-9)
    starts = np.cumsum(count) - count
    seq = np.arange(total) - np.repeat(starts, count)
    gaps[seq == 0] = 0.0  # the first purchase is the acquisition itself
    cum = np.cumsum(gaps)
    offset = np.repeat(cum[starts[count > 0]] if total else np.array([]), count[count > 0])
    t = persons["acquired_day"].to_numpy()[person_idx] + (cum - offset)
    nu = persons["spend_nu"].to_numpy()[person_idx]
    amount = rng.gamma(persons["spend_p"].to_numpy()[person_idx], 1.0 / nu)
    is_online = rng.random(total) < persons["online_share"].to_numpy()[person_idx]
    return pd.DataFrame(
        {
            "person_idx": person_idx,
            "seq": seq,
            "t": t,
            "amount": np.round(np.maximum(amount, 1.0), 2),
            "is_online": is_online,
        }
    )
