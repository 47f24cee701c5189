"""A fair comparison with the champion: never score it on rows it was trained on.

New data often overlaps old data. Scored on a holdout that holds rows it trained on, the
champion looks better than it is and blocks a better challenger. Each version stores the hashes
of its training rows; when the new holdout overlaps them, candidate and champion are both scored
on the rows the champion never saw, and the decision says so.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from conveyor import registry
from conveyor.orchestration import IO_TASK
from conveyor.spec import TaskType
from tasks.evaluation import compute_metrics

TRAIN_ROWS_ARTIFACT = "conveyor/train_rows.npy"
# Below this many unseen rows a comparison says more about noise than about the models.
MIN_CLEAN_ROWS = 30


def _each_row_hash(X: pd.DataFrame, y: pd.Series) -> np.ndarray:
    """One uint64 per row, in row order, over its features and target (pandas' stable row hash)."""
    frame = X.copy()
    frame["__target__"] = y.to_numpy()
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


def row_hashes(X: pd.DataFrame, y: pd.Series) -> np.ndarray:
    """The rows' hashes, sorted: what a version keeps of its training rows."""
    return np.sort(_each_row_hash(X, y))


def hashes_bytes(hashes: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, hashes, allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class Comparison:
    candidate: dict[str, float]
    champion: dict[str, float] | None
    rows: int
    overlap: int
    excluded: bool = False

    def note(self) -> str:
        if not self.overlap or self.champion is None:
            return ""
        if not self.excluded:
            return f" (the champion trained on {self.overlap} of these holdout rows; too few others to leave them out)"
        return (
            f" (compared on the {self.rows} holdout rows the champion never trained on; "
            f"{self.overlap} rows it trained on left out)"
        )


def fair_comparison(
    task_type: TaskType,
    model: Any,
    champion: Any | None,
    X: pd.DataFrame,
    y: pd.Series,
    candidate_metrics: dict[str, float],
    champion_rows: np.ndarray | None,
) -> Comparison:
    """Candidate and champion metrics on the same rows, leaving out rows the champion trained on
    (when enough rows remain; otherwise the whole holdout, with the overlap reported)."""
    if champion is None:
        return Comparison(candidate_metrics, None, len(X), 0)
    seen = np.zeros(len(X), dtype=bool)
    if champion_rows is not None and len(champion_rows):
        seen = np.isin(_each_row_hash(X, y), champion_rows)
    overlap = int(seen.sum())
    clean = ~seen
    if overlap == 0 or clean.sum() < MIN_CLEAN_ROWS or y[clean].nunique() < y.nunique():
        return Comparison(candidate_metrics, compute_metrics(task_type, champion, X, y), len(X), overlap)
    X_clean, y_clean = X[clean], y[clean]
    return Comparison(
        compute_metrics(task_type, model, X_clean, y_clean),
        compute_metrics(task_type, champion, X_clean, y_clean),
        int(clean.sum()),
        overlap,
        excluded=True,
    )


@task(name="load_champion_rows", **IO_TASK)
def load_champion_rows(name: str, version: str | None) -> np.ndarray | None:
    """The champion's training-row hashes (None for a champion trained before they were kept)."""
    if version is None:
        return None
    run_id = registry.get_version(name, version).run_id
    try:
        data = registry.artifact_bytes(run_id, TRAIN_ROWS_ARTIFACT)
    except Exception:
        return None
    return np.load(io.BytesIO(data), allow_pickle=False)


@task(name="compare_with_champion", **IO_TASK)
def compare_with_champion(
    task_type: TaskType,
    model: Any,
    champion: Any | None,
    X: pd.DataFrame,
    y: pd.Series,
    candidate_metrics: dict[str, float],
    champion_rows: np.ndarray | None,
) -> Comparison:
    return fair_comparison(task_type, model, champion, X, y, candidate_metrics, champion_rows)
