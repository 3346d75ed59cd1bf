"""Individual ratings from `total_2rounds.csv` and the label reliability they imply.

Quirks handled: file names end in `.wav`, `_score` is sometimes lower-case, 0 or empty means
"not answered" (NaN here), and a row with any value above 7 is invalid and dropped (counted).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pianolab.data.percepiano import N_DIMS, RATINGS, Dataset
from pianolab.errors import fail

# Renames from the survey's file names to label keys (the original mapping); the bundled CSV
# needs only the case fix, but a fuller release may need entries here.
RENAMES: dict[str, str] = {}


def normalise_filename(name: str) -> str:
    """Survey file name -> label key."""
    stem = re.sub(r"\.wav$", "", str(name).strip(), flags=re.IGNORECASE)
    stem = re.sub(r"_score(\d?)_", lambda m: f"_Score{m.group(1)}_", stem)
    return RENAMES.get(stem, stem)


@dataclass
class Ratings:
    """Long table of valid ratings: user, data_id (survey order), stem, d0..d18 (NaN = missing)."""

    table: pd.DataFrame
    invalid_rows: int

    def matrix(self, stems: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per stem: (raters x 19) ratings array and the raters' user ids."""
        by_stem = dict(tuple(self.table.groupby("stem")))
        dims = [f"d{i}" for i in range(N_DIMS)]
        mats, users = [], []
        for s in stems:
            part = by_stem.get(s)
            mats.append(np.empty((0, N_DIMS)) if part is None else part[dims].to_numpy(float))
            users.append(np.empty(0) if part is None else part["user"].to_numpy())
        return mats, users


def load_ratings(root: Path) -> Ratings:
    """Parse every individual rating; invalid rows (a value above 7) are dropped and counted."""
    path = Path(root) / RATINGS
    if not path.is_file():
        raise fail(path, "ratings file missing")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise fail(path, f"unreadable ratings file ({e})") from None
    # The first 19 question columns are the 19 dimensions in label order (checked against the
    # label file: r > 0.99 each); the 20th, Question_9_2_1, is not one of them.
    qcols = [c for c in raw.columns if c.startswith("Question_")][:N_DIMS]
    if len(qcols) != N_DIMS or not {"user", "dataID", "filename"} <= set(raw.columns):
        raise fail(path, f"expected user, dataID, filename and {N_DIMS} Question_ columns")
    values = raw[qcols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    if np.isnan(values).all():
        raise fail(path, "no numeric ratings found")
    invalid = np.nanmax(np.where(np.isnan(values), 0, values), axis=1) > 7
    values = np.where(values == 0, np.nan, values)
    table = pd.DataFrame(values[~invalid], columns=[f"d{i}" for i in range(N_DIMS)])
    table.insert(0, "stem", [normalise_filename(f) for f in raw["filename"][~invalid]])
    table.insert(0, "data_id", pd.to_numeric(raw["dataID"][~invalid], errors="coerce").to_numpy())
    table.insert(0, "user", raw["user"][~invalid].to_numpy())
    return Ratings(table=table.reset_index(drop=True), invalid_rows=int(invalid.sum()))


def _pearson_cols(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson r of two (n, d) arrays, ignoring rows with NaN per column."""
    out = np.full(a.shape[1], np.nan)
    for j in range(a.shape[1]):
        ok = ~(np.isnan(a[:, j]) | np.isnan(b[:, j]))
        if ok.sum() > 2:
            out[j] = np.corrcoef(a[ok, j], b[ok, j])[0, 1]
    return out


def _demean_by_group(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = x.copy()
    for g in np.unique(groups):
        m = groups == g
        out[m] -= np.nanmean(x[m], axis=0)
    return out


@dataclass
class Reliability:
    """Per-dimension split-half reliability (Spearman-Brown corrected), mean over random splits."""

    overall: np.ndarray  # (19,)
    within_group: np.ndarray  # (19,)
    one_vs_rest: np.ndarray  # (19,) one rater vs the mean of the others
    n_items: int
    n_splits: int

    @property
    def ceiling(self) -> np.ndarray:
        """Highest expected Pearson r of a model with the mean labels: sqrt(reliability)."""
        return np.sqrt(np.clip(self.overall, 0, None))


def split_half_reliability(
    dataset: Dataset, ratings: Ratings, n_splits: int = 50, seed: int = 0, humans_only: bool = False
) -> Reliability:
    """Split each item's raters at random into halves, correlate the half means over items per
    dimension, and apply Spearman-Brown (2r / (1 + r)); `within_group` first subtracts each
    excerpt group's mean of each half."""
    items = [it for it in dataset.items if not (humans_only and it.deadpan)]
    mats, _ = ratings.matrix([it.stem for it in items])
    keep = [i for i, m in enumerate(mats) if len(m) >= 2]
    mats = [mats[i] for i in keep]
    groups = np.array([items[i].group for i in keep])
    rng = np.random.default_rng(seed)
    sb = lambda r: 2 * r / (1 + r)  # noqa: E731
    overall, within, single = [], [], []
    for _ in range(n_splits):
        h1, h2, one, rest = [], [], [], []
        for m in mats:
            perm = rng.permutation(len(m))
            half = len(m) // 2
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                h1.append(np.nanmean(m[perm[:half]], axis=0))
                h2.append(np.nanmean(m[perm[half:]], axis=0))
                one.append(m[perm[0]])
                rest.append(np.nanmean(m[perm[1:]], axis=0))
        h1, h2 = np.array(h1), np.array(h2)
        overall.append(sb(_pearson_cols(h1, h2)))
        within.append(sb(_pearson_cols(_demean_by_group(h1, groups), _demean_by_group(h2, groups))))
        single.append(_pearson_cols(np.array(one), np.array(rest)))
    return Reliability(
        overall=np.nanmean(overall, axis=0),
        within_group=np.nanmean(within, axis=0),
        one_vs_rest=np.nanmean(single, axis=0),
        n_items=len(mats),
        n_splits=n_splits,
    )
