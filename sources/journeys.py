"""Known effects of marketing on conversion: the truth attribution in the warehouse should recover.

Purchases (who buys, when, what, online or in store) are drawn without any reference to marketing
(`population.py`, `world.py`) and stay exactly as they are. What carries the effects is which touches come
before them, so no person-level figure (identity, RFM, CLV, propensity truth) moves:

- Channels. A browsing session arrives from channel c with probability CHANNEL_P[c]; the purchase session of
  an online order arrives from c with probability proportional to CHANNEL_P[c] * multiplier[c]. So the odds
  that a session from channel c is a purchase session are proportional to multiplier[c]: a channel with
  multiplier 2 converts its sessions at twice the odds of a channel with multiplier 1. The multipliers are
  CHANNEL_EFFECT_LADDER in an order drawn from the seed (stream [seed, 12]), so each seed has its own known
  ordering and a test cannot pass by assuming one.
- Campaigns. Each weekly email campaign k has a click effect e_k, drawn from its own stream [seed, 13, k]
  (log-uniform in CAMPAIGN_EFFECT_RANGE): an opener who buys within CAMPAIGN_WINDOW_DAYS of the moment they
  would click clicks with probability CLICK_RATE * e_k, any other opener with CLICK_RATE. So the odds of a
  purchase within the window after a click on campaign k are e_k times the odds of an opener of it.

The draws reuse the random numbers the generator drew before these effects existed (same streams, same
calls, only the probabilities differ), so nothing else in a world changed: only the channel of purchase
sessions and which openers click.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CHANNELS = np.array(["direct", "organic_search", "paid_search", "email", "social", "referral"], dtype=object)
CHANNEL_P = np.array([0.3, 0.3, 0.15, 0.1, 0.1, 0.05])
# Conversion odds multipliers, one per channel in a seeded order; a factor 1.8 apart, so each step is big
# enough to show on a test-sized world and the whole range (1 : 34) stays within what channels differ by.
CHANNEL_EFFECT_LADDER = np.array([0.2, 0.36, 0.65, 1.17, 2.1, 3.78])
CLICK_RATE = 0.25
CAMPAIGN_EFFECT_RANGE = (0.5, 4.0)  # CLICK_RATE * 4 = 1: the most effective campaign makes every buyer click
# An email's effect lasts as long as the usual attribution lookback (the warehouse's default, 30 days). With 7
# days, a 3,000-customer year pooled by half showed no difference (0.244 vs 0.233 orders per click at seed 42).
CAMPAIGN_WINDOW_DAYS = 30.0


def channel_multipliers(seed: int) -> np.ndarray:
    """The conversion odds multiplier of each channel of CHANNELS, in its order."""
    return CHANNEL_EFFECT_LADDER[np.random.default_rng([seed, 12]).permutation(len(CHANNELS))]


def purchase_channel_p(seed: int) -> np.ndarray:
    """The channel distribution of purchase sessions: CHANNEL_P weighted by the multipliers."""
    weights = CHANNEL_P * channel_multipliers(seed)
    return weights / weights.sum()


def campaign_effect(seed: int, campaign: int) -> float:
    """The click effect e_k of campaign number `campaign` (0 = the first Tuesday)."""
    low, high = np.log(CAMPAIGN_EFFECT_RANGE[0]), np.log(CAMPAIGN_EFFECT_RANGE[1])
    return float(np.exp(np.random.default_rng([seed, 13, campaign]).uniform(low, high)))


def purchase_times(purchases: pd.DataFrame) -> pd.DataFrame:
    """The purchases (person_idx, t in days) as `buys_within` reads them: sorted by time, once."""
    times = purchases[["person_idx", "t"]].astype({"person_idx": np.int64}).sort_values("t", kind="stable")
    return times.assign(next_t=times["t"]).reset_index(drop=True)


def buys_within(times: pd.DataFrame, person: np.ndarray, t: np.ndarray, days: float) -> np.ndarray:
    """Whether person[i] has a purchase in (t[i], t[i] + days]; `times` from purchase_times."""
    probes = pd.DataFrame({"row": np.arange(len(person)), "person_idx": person.astype(np.int64), "t": t})
    following = pd.merge_asof(
        probes.sort_values("t", kind="stable"),
        times,
        on="t",
        by="person_idx",
        direction="forward",
        allow_exact_matches=False,
    ).sort_values("row")
    next_t = following["next_t"].to_numpy()
    return ~np.isnan(next_t) & (next_t <= t + days)


def channel_truth(seed: int) -> pd.DataFrame:
    """truth/channel_effects.parquet: per channel its session share, multiplier and purchase-session share."""
    return pd.DataFrame(
        {
            "channel": CHANNELS,
            "browsing_session_share": CHANNEL_P,
            "conversion_multiplier": channel_multipliers(seed),
            "purchase_session_share": purchase_channel_p(seed),
        }
    )
