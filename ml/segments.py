"""Behavioural customer segments: KMeans with k chosen by silhouette, named profiles, stable ids.

- Features (features.segment_features): RFM values, tenure, AOV, web and email engagement, channel mix and
  preferred category; skewed counts/amounts are log1p-transformed, everything standardised, category one-hot.
- k is chosen by silhouette (on a fixed subsample at scale) over K_RANGE; the elbow curve (inertia) and the
  silhouettes are recorded. GaussianMixture and AgglomerativeClustering (ward) are fitted with the same k on
  the same features and compared by silhouette on the same subsample. Only methods that can assign new
  customers and give centroids (KMeans, GaussianMixture) are eligible for production; KMeans is kept unless
  the mixture beats it by more than SELECTION_TOLERANCE (KMeans partitions are easier to explain).
- Segment ids are stable: new centroids are matched to the previous run's profiles (Hungarian matching on
  standardised centroids); unmatched segments get new ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.compose import ColumnTransformer
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from touchpoint.ml.features import SEGMENT_CATEGORICAL, SEGMENT_NUMERIC_RATES, SEGMENT_NUMERIC_SKEWED
from touchpoint.ml.model_runs import ModelRun

RANDOM_STATE = 20240601
K_RANGE = range(2, 9)
MIN_CUSTOMERS = 20
SILHOUETTE_SAMPLE = 4000
SELECTION_SAMPLE = 20000  # k search fits on at most this many customers; the final fit uses everyone
AGGLOMERATIVE_SAMPLE = 3000
SELECTION_TOLERANCE = 0.02
NUMERIC_FEATURES = SEGMENT_NUMERIC_SKEWED + SEGMENT_NUMERIC_RATES
FEATURES = NUMERIC_FEATURES + SEGMENT_CATEGORICAL


class NotEnoughCustomers(ValueError):
    pass


def _log1p(values):
    return np.log1p(np.clip(values, 0, None))


def _half_weight(values):
    return values * 0.5


def feature_transformer() -> ColumnTransformer:
    return ColumnTransformer(
        [
            (
                "log_scaled",
                Pipeline([("log", FunctionTransformer(_log1p)), ("scale", StandardScaler())]),
                SEGMENT_NUMERIC_SKEWED,
            ),
            ("scaled", StandardScaler(), SEGMENT_NUMERIC_RATES),
            # scaled down so a category does not outweigh the behavioural features
            (
                "category",
                Pipeline(
                    [
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                        ("weight", FunctionTransformer(_half_weight)),
                    ]
                ),
                SEGMENT_CATEGORICAL,
            ),
        ]
    )


def segment_pipeline(k: int) -> Pipeline:
    return Pipeline(
        [
            ("features", feature_transformer()),
            ("model", KMeans(n_clusters=k, n_init=4, random_state=RANDOM_STATE)),
        ]
    )


@dataclass
class SegmentOutcome:
    assignments: pd.DataFrame  # person_id, segment_id, segment_name
    profiles: pd.DataFrame  # segment_id, segment_name, size, share, centroid (JSON), top_features (JSON)
    changes: pd.DataFrame  # person_id, previous_as_of, previous_segment_id, segment_id, change_type
    run: ModelRun
    model: Pipeline


def _subsample(n: int, size: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(RANDOM_STATE).choice(n, size=size, replace=False))


def choose_k(matrix: np.ndarray) -> tuple[int, dict[str, dict[int, float]]]:
    n = len(matrix)
    distinct = np.unique(matrix.round(9), axis=0).shape[0]
    ks = [k for k in K_RANGE if k < min(n, distinct)]
    fit_rows = _subsample(n, SELECTION_SAMPLE)
    sample = matrix[fit_rows]
    score_rows = _subsample(len(sample), SILHOUETTE_SAMPLE)
    inertia, silhouettes = {}, {}
    for k in ks:
        model = KMeans(n_clusters=k, n_init=4, random_state=RANDOM_STATE).fit(sample)
        inertia[k] = float(model.inertia_)
        labels = model.labels_[score_rows]
        silhouettes[k] = float(silhouette_score(sample[score_rows], labels)) if len(set(labels)) > 1 else -1.0
    best = max(ks, key=lambda k: (round(silhouettes[k], 6), -k))
    return best, {"elbow_inertia": inertia, "silhouette": silhouettes}


def compare_algorithms(matrix: np.ndarray, k: int, kmeans_labels: np.ndarray) -> dict[str, object]:
    rows = _subsample(len(matrix), SILHOUETTE_SAMPLE)
    sample = matrix[rows]

    def score(labels: np.ndarray) -> float:
        return float(silhouette_score(sample, labels)) if len(set(labels)) > 1 else -1.0

    mixture = GaussianMixture(n_components=k, covariance_type="full", random_state=RANDOM_STATE, reg_covar=1e-4)
    mixture.fit(matrix[_subsample(len(matrix), SELECTION_SAMPLE)])
    agglomerative_rows = rows[_subsample(len(rows), AGGLOMERATIVE_SAMPLE)]
    agglomerative = AgglomerativeClustering(n_clusters=k, linkage="ward").fit(matrix[agglomerative_rows])
    result = {
        "kmeans": score(kmeans_labels[rows]),
        "gaussian_mixture": score(mixture.predict(sample)),
        "agglomerative_ward": float(silhouette_score(matrix[agglomerative_rows], agglomerative.labels_))
        if len(set(agglomerative.labels_)) > 1
        else -1.0,
    }
    best_other = max(result["gaussian_mixture"], result["agglomerative_ward"])
    if result["kmeans"] >= result["gaussian_mixture"] - SELECTION_TOLERANCE:
        why = (
            f"kmeans kept: silhouette {result['kmeans']:.3f} vs gaussian_mixture "
            f"{result['gaussian_mixture']:.3f} and agglomerative_ward {result['agglomerative_ward']:.3f}; "
            "agglomerative cannot score new customers "
            "nor give centroids for stable ids, and kmeans is within tolerance of or better than the mixture"
        )
        chosen = "kmeans"
    else:
        why = (
            f"gaussian_mixture beats kmeans by more than {SELECTION_TOLERANCE} silhouette "
            f"({result['gaussian_mixture']:.3f} vs {result['kmeans']:.3f}); agglomerative "
            f"{result['agglomerative_ward']:.3f} is not eligible (cannot score new customers)"
        )
        chosen = "gaussian_mixture"
    return {
        "silhouette_by_algorithm": result,
        "chosen_algorithm": chosen,
        "why": why,
        "best_alternative_silhouette": best_other,
        "mixture": mixture,
    }


def base_name(z: dict[str, float]) -> str:
    """Human-readable name from a profile's standardised (transformed-space) feature means."""
    if z["recency_days"] > 0.7:
        return "Lapsed" if z["frequency"] < 0.5 else "Lapsed loyal"
    if z["monetary"] > 0.6 and z["frequency"] > 0.4:
        return "High-value loyal"
    if z["frequency"] > 0.5:
        return "Frequent buyers"
    if z["tenure_days"] < -0.6:
        return "New customers"
    if z["avg_order_value"] < -0.5:
        return "Bargain hunters"
    if z["avg_order_value"] > 0.5:
        return "Big-basket occasional"
    if z["email_open_rate"] > 0.6 or z["web_sessions"] > 0.6:
        return "Engaged browsers"
    if z["online_share"] > 0.6:
        return "Online regulars"
    if z["online_share"] < -0.6:
        return "In-store regulars"
    return "Occasional buyers"


# What a feature says about a segment (higher, lower) when it is what sets the segment apart from another one
# that the rules above name alike. Every label is different, so two segments never get the same qualifier.
DISTINGUISHING = {
    "recency_days": ("lapsing", "recent"),
    "frequency": ("most frequent", "less frequent"),
    "monetary": ("top spend", "lower spend"),
    "avg_order_value": ("big baskets", "small baskets"),
    "tenure_days": ("long-standing", "newer"),
    "web_sessions": ("web browsers", "rarely browsing"),
    "email_open_rate": ("email readers", "email-quiet"),
    "email_click_rate": ("email clickers", "rarely clicking"),
    "online_share": ("online", "in-store"),
}


def name_segments(z_by_segment: dict[int, dict[str, float]]) -> dict[int, str]:
    """Unique, readable names for segments (in id order) from their standardised feature means.

    Segments the rules name alike (two "High-value loyal") are told apart by the feature on which each differs
    most from the others of its kind: "High-value loyal (online)" and "High-value loyal (in-store)". A number
    ("High-value loyal 2") would say nothing about which is which, and would change meaning with the ids.
    """
    bases = {segment: base_name(z) for segment, z in z_by_segment.items()}
    names: dict[int, str] = {}
    for base in dict.fromkeys(bases.values()):
        group = [segment for segment in z_by_segment if bases[segment] == base]
        if len(group) == 1:
            names[group[0]] = base
            continue
        taken: set[str] = set()
        for segment in group:
            z = z_by_segment[segment]
            others = {f: float(np.mean([z_by_segment[o][f] for o in group if o != segment])) for f in DISTINGUISHING}
            ranked = sorted(DISTINGUISHING, key=lambda f: -abs(z[f] - others[f]))
            labels = (DISTINGUISHING[f][0 if z[f] > others[f] else 1] for f in ranked)
            # at most 8 segments and 18 distinct labels: an untaken one always exists
            label = next(label for label in labels if label not in taken)
            taken.add(label)
            names[segment] = f"{base} ({label})"
    return names


def _profile(frame: pd.DataFrame, transformed: np.ndarray, labels: np.ndarray, numeric_index: list[int]):
    """Per raw label: size, centroid in original units, standardised means and top distinguishing features."""
    profiles = {}
    overall = transformed[:, numeric_index]
    mean, std = overall.mean(axis=0), overall.std(axis=0)
    std[std == 0] = 1.0
    for label in sorted(set(labels.tolist())):
        members = labels == label
        z = (overall[members].mean(axis=0) - mean) / std
        z_by_feature = dict(zip(NUMERIC_FEATURES, z.tolist(), strict=True))
        top = sorted(z_by_feature.items(), key=lambda item: -abs(item[1]))[:3]
        centroid = {f: float(frame.loc[members, f].mean()) for f in NUMERIC_FEATURES}
        centroid["median_monetary"] = float(frame.loc[members, "monetary"].median())
        category = frame.loc[members, "preferred_category"].mode()
        centroid["top_category"] = str(category.iloc[0]) if len(category) else None
        profiles[label] = {
            "size": int(members.sum()),
            "z": z_by_feature,
            "centroid": centroid,
            "top_features": [
                {"feature": f, "direction": "high" if value > 0 else "low", "z": round(float(value), 3)}
                for f, value in top
            ],
        }
    return profiles


def _match_ids(
    profiles: dict[int, dict], previous: pd.DataFrame | None, frame: pd.DataFrame
) -> tuple[dict[int, int], dict[str, object]]:
    """Raw label -> stable segment id. Matching cost: distance of log/standardised original-unit centroids."""
    labels = sorted(profiles)
    if previous is None or previous.empty:
        # first run: order ids by value so they are reproducible and readable
        ordered = sorted(labels, key=lambda lab: -profiles[lab]["centroid"]["monetary"])
        return {lab: i + 1 for i, lab in enumerate(ordered)}, {"matched_to_previous": False}
    transformed = frame[NUMERIC_FEATURES].copy()
    transformed[SEGMENT_NUMERIC_SKEWED] = np.log1p(transformed[SEGMENT_NUMERIC_SKEWED].clip(lower=0))
    scale = transformed.std().replace(0, 1).fillna(1)

    def vector(centroid: dict) -> np.ndarray:
        values = pd.Series({f: centroid.get(f, np.nan) for f in NUMERIC_FEATURES}, dtype="float64")
        values[SEGMENT_NUMERIC_SKEWED] = np.log1p(values[SEGMENT_NUMERIC_SKEWED].clip(lower=0))
        return (values / scale).fillna(0).to_numpy()

    new_vectors = np.array([vector(profiles[lab]["centroid"]) for lab in labels])
    old_ids = previous["segment_id"].astype(int).tolist()
    old_vectors = np.array([vector(json.loads(c)) for c in previous["centroid"]])
    cost = np.linalg.norm(new_vectors[:, None, :] - old_vectors[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    mapping = {labels[r]: old_ids[c] for r, c in zip(rows, cols, strict=True)}
    next_id = max(old_ids) + 1
    for lab in sorted(labels, key=lambda lab: -profiles[lab]["centroid"]["monetary"]):
        if lab not in mapping:
            mapping[lab] = next_id
            next_id += 1
    return mapping, {
        "matched_to_previous": True,
        "matching_cost": {str(mapping[labels[r]]): float(cost[r, c]) for r, c in zip(rows, cols, strict=True)},
    }


def fit_segments(
    frame: pd.DataFrame,
    as_of: date,
    trained_at: datetime,
    previous_profiles: pd.DataFrame | None = None,
    previous_assignments: pd.DataFrame | None = None,
    previous_as_of: date | None = None,
) -> SegmentOutcome:
    """Cluster the customers in `frame` (features.segment_features).

    Raises NotEnoughCustomers on tiny or degenerate data.
    """
    transformer, matrix = _feature_matrix(frame)
    clustering = _cluster(frame, transformer, matrix)
    day = _segment_day(frame, matrix, clustering.labels, previous_profiles, previous_assignments, previous_as_of)
    run = ModelRun(
        "segments",
        as_of,
        trained_at,
        training_window=f"customers with purchases up to {as_of.isoformat()}",
        time_unit="day",
        parameters={
            "k": clustering.k,
            "algorithm": clustering.comparison["chosen_algorithm"],
            "k_range": [min(K_RANGE), max(K_RANGE)],
            "n_init": 4,
            "random_state": RANDOM_STATE,
            "silhouette_sample": SILHOUETTE_SAMPLE,
        },
        metrics={"customers": len(frame), **clustering.curves, **clustering.comparison, **day.metrics},
        features=list(FEATURES),
    )
    return SegmentOutcome(day.assignments, day.profiles, day.changes, run, clustering.production)


@dataclass
class SegmentDay:
    """The segment tables of one as-of from a model's raw labels, and that day's counts for the run record."""

    assignments: pd.DataFrame
    profiles: pd.DataFrame
    changes: pd.DataFrame
    metrics: dict[str, object]  # matching to the previous as-of, segment sizes, membership changes


def assign_segments(
    model: Pipeline,
    frame: pd.DataFrame,
    previous_profiles: pd.DataFrame | None = None,
    previous_assignments: pd.DataFrame | None = None,
    previous_as_of: date | None = None,
) -> SegmentDay:
    """Assign the customers in `frame` with a segmentation trained earlier (a Pipeline: features -> KMeans or
    GaussianMixture); profiles, names and stable ids as after a training. Raises NotEnoughCustomers as
    fit_segments does."""
    if len(frame) < MIN_CUSTOMERS:
        raise NotEnoughCustomers(f"{len(frame)} customers with purchases; segments need >= {MIN_CUSTOMERS}")
    matrix = model.named_steps["features"].transform(frame[FEATURES])
    labels = model.named_steps["model"].predict(matrix)
    return _segment_day(frame, matrix, labels, previous_profiles, previous_assignments, previous_as_of)


def _segment_day(
    frame: pd.DataFrame,
    matrix: np.ndarray,
    labels: np.ndarray,
    previous_profiles: pd.DataFrame | None,
    previous_assignments: pd.DataFrame | None,
    previous_as_of: date | None,
) -> SegmentDay:
    """Profiles, stable ids (matched to the previous as-of), names and membership changes of raw labels."""
    numeric_index = list(range(len(NUMERIC_FEATURES)))
    profiles = _profile(frame, matrix, labels, numeric_index)
    mapping, matching = _match_ids(profiles, previous_profiles, frame)
    names = name_segments({lab: profiles[lab]["z"] for lab in sorted(profiles, key=lambda lab: mapping[lab])})
    assignments = pd.DataFrame(
        {
            "person_id": frame["person_id"].to_numpy(),
            "segment_id": np.array([mapping[lab] for lab in labels], dtype="int64"),
            "segment_name": [names[lab] for lab in labels],
        }
    )
    profile_rows = _profile_rows(profiles, mapping, names, len(frame))
    changes = membership_changes(assignments, previous_assignments, previous_as_of)
    metrics = {
        **matching,
        "segment_sizes": {str(r.segment_id): int(r.size) for r in profile_rows.itertuples()},
        "membership_changes": int(len(changes)),
    }
    return SegmentDay(assignments, profile_rows, changes, metrics)


def _feature_matrix(frame: pd.DataFrame) -> tuple[ColumnTransformer, np.ndarray]:
    """The fitted feature transformer and the customers in its space; raises NotEnoughCustomers when there
    is too little to cluster (the smallest k, 2, must stay below the number of distinct profiles)."""
    if len(frame) < MIN_CUSTOMERS:
        raise NotEnoughCustomers(f"{len(frame)} customers with purchases; segments need >= {MIN_CUSTOMERS}")
    transformer = feature_transformer().fit(frame[FEATURES])
    matrix = transformer.transform(frame[FEATURES])
    if np.unique(matrix.round(9), axis=0).shape[0] < 3:
        raise NotEnoughCustomers("fewer than three distinct customer profiles: nothing to segment")
    return transformer, matrix


@dataclass
class _Clustering:
    k: int
    curves: dict[str, dict[int, float]]  # elbow inertia and silhouette per k
    comparison: dict[str, object]  # silhouettes by algorithm, the chosen one and why
    production: Pipeline  # features -> the chosen model, able to assign new customers
    labels: np.ndarray  # raw cluster label per customer, from the chosen model


def _cluster(frame: pd.DataFrame, transformer: ColumnTransformer, matrix: np.ndarray) -> _Clustering:
    """k by silhouette, KMeans at that k, and the Gaussian mixture in its place when it clearly wins."""
    k, curves = choose_k(matrix)
    pipeline = segment_pipeline(k).fit(frame[FEATURES])
    kmeans_labels = pipeline.named_steps["model"].labels_
    comparison = compare_algorithms(matrix, k, kmeans_labels)
    mixture = comparison.pop("mixture")
    if comparison["chosen_algorithm"] == "gaussian_mixture":
        production = Pipeline([("features", transformer), ("model", mixture)])
        return _Clustering(k, curves, comparison, production, mixture.predict(matrix))
    return _Clustering(k, curves, comparison, pipeline, kmeans_labels)


def _profile_rows(
    profiles: dict[int, dict], mapping: dict[int, int], names: dict[int, str], customers: int
) -> pd.DataFrame:
    """ml.segment_profiles rows, by stable segment id; centroid and top features as JSON."""
    return (
        pd.DataFrame(
            [
                {
                    "segment_id": mapping[lab],
                    "segment_name": names[lab],
                    "size": profiles[lab]["size"],
                    "share": profiles[lab]["size"] / customers,
                    "centroid": json.dumps(profiles[lab]["centroid"], sort_keys=True),
                    "top_features": json.dumps(profiles[lab]["top_features"]),
                }
                for lab in profiles
            ]
        )
        .sort_values("segment_id")
        .reset_index(drop=True)
    )


def membership_changes(
    current: pd.DataFrame, previous: pd.DataFrame | None, previous_as_of: date | None
) -> pd.DataFrame:
    """Persons whose segment differs from the previous run: 'new', 'moved' or 'left'."""
    columns = ["person_id", "previous_as_of", "previous_segment_id", "segment_id", "change_type"]
    if previous is None or previous.empty:
        return pd.DataFrame(columns=columns)
    merged = current[["person_id", "segment_id"]].merge(
        previous[["person_id", "segment_id"]].rename(columns={"segment_id": "previous_segment_id"}),
        on="person_id",
        how="outer",
    )
    merged["change_type"] = np.select(
        [
            merged["previous_segment_id"].isna(),
            merged["segment_id"].isna(),
            merged["segment_id"] != merged["previous_segment_id"],
        ],
        ["new", "left", "moved"],
        default="same",
    )
    changed = merged[merged["change_type"] != "same"].copy()
    changed["previous_as_of"] = previous_as_of
    changed["segment_id"] = changed["segment_id"].astype("Int64")
    changed["previous_segment_id"] = changed["previous_segment_id"].astype("Int64")
    return changed.sort_values("person_id").reset_index(drop=True)[columns]
