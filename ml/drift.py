"""Population stability index (PSI) of model input features: a trained model's reference distribution, and how far
today's data has moved from it.

A numeric feature is cut at the deciles of the training values (the inner edges 10%..90%, repeated edges
dropped, so a feature with many equal values has fewer bins); a bin holds the values `>= ` its lower edge and
`<` its upper one, the outer bins open-ended (the ML gate's score PSI, expectations/suites/ml.py, bins alike).
A categorical feature has one bin per category seen in training plus one for anything new. The reference keeps
the edges and the training share of each bin, so the model's training data is not needed to measure drift.

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

with shares of 0 counted as PSI_FLOOR (an empty bin would make the term infinite). Rules of thumb: < 0.1 no
real change, 0.1..0.2 moderate, > 0.2 a significant shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

PSI_BINS = 10
PSI_FLOOR = 1e-4
NEW_CATEGORY = "(not seen in training)"


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two share vectors over the same bins (each summing to 1); shares below PSI_FLOOR count as it."""
    expected = np.maximum(np.asarray(expected, dtype="float64"), PSI_FLOOR)
    actual = np.maximum(np.asarray(actual, dtype="float64"), PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class FeatureDistribution:
    """One feature's training distribution: numeric `edges` (inner bin edges) or `categories`, and the share of
    the training values in each bin."""

    edges: tuple[float, ...] | None
    categories: tuple[str, ...] | None
    shares: tuple[float, ...]

    @classmethod
    def of(cls, values: pd.Series) -> FeatureDistribution:
        """The distribution of the training values (nulls left out)."""
        values = values.dropna()
        if values.empty:
            return cls(edges=(), categories=None, shares=(1.0,))
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            categories = tuple(sorted(values.astype(str).unique()))
            reference = cls(edges=None, categories=categories, shares=())
        else:
            quantiles = np.quantile(values.to_numpy(dtype="float64"), np.arange(1, PSI_BINS) / PSI_BINS)
            reference = cls(edges=tuple(float(edge) for edge in np.unique(quantiles)), categories=None, shares=())
        return cls(reference.edges, reference.categories, tuple(reference.bin_shares(values).tolist()))

    def bin_shares(self, values: pd.Series) -> np.ndarray:
        """The share of `values` (nulls left out) in each bin of this distribution."""
        values = values.dropna()
        bins = len(self.categories) + 1 if self.categories is not None else len(self.edges or ()) + 1
        if values.empty:
            return np.zeros(bins)
        if self.categories is not None:
            index = {category: i for i, category in enumerate(self.categories)}
            positions = values.astype(str).map(index).fillna(len(self.categories)).to_numpy(dtype="int64")
        else:
            positions = np.searchsorted(np.asarray(self.edges, dtype="float64"), values.to_numpy(dtype="float64"),
                                        side="right")
        return np.bincount(positions, minlength=bins) / len(values)

    def stability(self, values: pd.Series) -> float | None:
        """PSI of `values` against this distribution; None when there is nothing to compare."""
        if values.dropna().empty:
            return None
        return psi(np.asarray(self.shares), self.bin_shares(values))

    def as_dict(self) -> dict[str, Any]:
        if self.categories is not None:
            return {"categories": list(self.categories), "shares": list(self.shares)}
        return {"edges": list(self.edges or ()), "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureDistribution:
        categories = data.get("categories")
        edges = data.get("edges")
        return cls(
            edges=None if edges is None else tuple(float(e) for e in edges),
            categories=None if categories is None else tuple(str(c) for c in categories),
            shares=tuple(float(s) for s in data["shares"]),
        )


@dataclass(frozen=True)
class FeatureReference:
    """What a model saw when it was trained: the number of rows (customers) and each feature's distribution."""

    rows: int
    features: dict[str, FeatureDistribution]

    @classmethod
    def of(cls, frame: pd.DataFrame, features: list[str] | tuple[str, ...]) -> FeatureReference:
        return cls(rows=len(frame), features={f: FeatureDistribution.of(frame[f]) for f in features})

    def stability(self, frame: pd.DataFrame) -> dict[str, float | None]:
        """PSI of each feature of `frame` against the reference."""
        return {name: reference.stability(frame[name]) for name, reference in self.features.items()}

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "features": {name: d.as_dict() for name, d in self.features.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureReference:
        features = {name: FeatureDistribution.from_dict(d) for name, d in data["features"].items()}
        return cls(rows=int(data["rows"]), features=features)
