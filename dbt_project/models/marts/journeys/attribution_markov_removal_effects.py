"""Markov-chain removal effects: the data-driven attribution model over channel paths.

The chain is attribution_markov_transitions (first order; states '(start)', the channels, and the absorbing
'(conversion)' and '(null)'). The probability of converting from '(start)' is the absorption probability
into '(conversion)': with Q the moves among transient states and r the moves into '(conversion)', x = (I - Q)^-1 r
and P = x['(start)']. Removing a channel sends every move into it to '(null)' instead (the journey is lost);
the removal effect of the channel is 1 - P_without / P, the share of conversions the chain loses without it
(Anderl et al. 2016, "Mapping the customer journey"; the `ChannelAttribution` package computes the same).
Channels that appear on no converting journey have a removal effect of 0.

Returns one row per channel: removal_effect, removal_effect_share (removal effects normalised to sum to 1, how
attribution_conversions splits a conversion among the channels of its path), the conversion probability of the
chain and the one without the channel, and the conversion probability from the channel (x at the channel's
state: how likely a journey that reached the channel converts). The removal effect measures what a channel
contributes, so it grows with the channel's volume; the conversion probability from the channel measures how
well a touch of it converts, whatever its volume. A handful of states: solving is instant at any data size.
"""

import numpy as np
import pandas as pd

START, CONVERSION, NULL = "(start)", "(conversion)", "(null)"
COLUMNS = {
    "channel": "string",
    "removal_effect": "float64",
    "removal_effect_share": "float64",
    "conversion_probability": "float64",
    "conversion_probability_without_channel": "float64",
    "conversion_probability_from_channel": "float64",
}


def conversion_probabilities(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Absorption probability into '(conversion)' from every transient state: solve (I - Q) x = r."""
    system = np.eye(len(q)) - q
    try:
        return np.linalg.solve(system, r)
    except np.linalg.LinAlgError:  # a state with no way out (cannot happen for observed journeys)
        return np.linalg.lstsq(system, r, rcond=None)[0]


def removal_effects(transitions: pd.DataFrame) -> pd.DataFrame:
    """Per channel: removal effect and its share, from the transition counts (from_state, to_state,
    transitions_count)."""
    if transitions.empty:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMNS.items()})
    counts = transitions.groupby(["from_state", "to_state"], as_index=False)["transitions_count"].sum()
    channels = sorted(
        (set(counts["from_state"]) | set(counts["to_state"])) - {START, CONVERSION, NULL}
    )
    states = [START, *channels]
    index = {state: i for i, state in enumerate(states)}
    q = np.zeros((len(states), len(states)))
    r = np.zeros(len(states))
    totals = counts.groupby("from_state")["transitions_count"].sum()
    for row in counts.itertuples(index=False):
        probability = row.transitions_count / totals[row.from_state]
        if row.to_state == CONVERSION:
            r[index[row.from_state]] += probability
        elif row.to_state != NULL:
            q[index[row.from_state], index[row.to_state]] += probability
    from_state = conversion_probabilities(q, r)
    full = float(from_state[index[START]])
    rows = []
    for channel in channels:
        removed_q, removed_r = q.copy(), r.copy()
        i = index[channel]
        removed_q[:, i] = 0.0  # moves into the channel now end the journey in '(null)'
        removed_q[i, :] = 0.0
        removed_r[i] = 0.0
        without = float(conversion_probabilities(removed_q, removed_r)[index[START]])
        effect = 1.0 - without / full if full > 0 else 0.0
        rows.append((channel, max(effect, 0.0), full, without, float(from_state[i])))
    frame = pd.DataFrame(rows, columns=["channel", "removal_effect", "conversion_probability",
                                        "conversion_probability_without_channel",
                                        "conversion_probability_from_channel"])
    total = frame["removal_effect"].sum()
    frame["removal_effect_share"] = frame["removal_effect"] / total if total > 0 else 0.0
    return frame[list(COLUMNS)].astype(COLUMNS)


def model(dbt, session):
    dbt.config(materialized="table")
    transitions = dbt.ref("attribution_markov_transitions").df()
    return removal_effects(transitions)
