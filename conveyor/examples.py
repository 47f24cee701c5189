"""The bundled example datasets: real data that ships inside scikit-learn, written as CSV.

breast_cancer also ships the closed loop: its rows carry an `id` (the spec's `data.id_column`),
and a fifth of them are kept out of the training file as a batch to score (no target) with the
true diagnoses in a labels file, so score -> feedback -> monitor works from a fresh clone:

    conveyor score breast_cancer --input data/breast_cancer-batch.csv --output scored.csv
    conveyor feedback breast_cancer --labels data/breast_cancer-labels.csv
    conveyor monitor breast_cancer
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

EXAMPLES = {
    "breast_cancer": ("load_breast_cancer", "diagnosis"),
    "wine": ("load_wine", "cultivar"),
    "diabetes": ("load_diabetes", "progression"),
}
# breast_cancer: the id column, and the share of rows held back as the batch to score.
ID_COLUMN = "id"
BATCH_SHARE = 0.2
_SEED = 20_240_601


def _frame(loader_name: str, target: str) -> pd.DataFrame:
    from sklearn import datasets

    bunch = getattr(datasets, loader_name)(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    if target != "target":
        frame = frame.rename(columns={"target": target})
    if hasattr(bunch, "target_names") and loader_name != "load_diabetes":
        names = list(bunch.target_names)
        frame[target] = frame[target].map(lambda i: str(names[int(i)]))
    return frame


def closed_loop_files(frame: pd.DataFrame, target: str) -> dict[str, pd.DataFrame]:
    """Training rows, a batch to score (no target) and its labels, all keyed by an `id` column.

    The batch is a seeded random fifth of the rows, so the model never trained on it and its
    live performance after feedback is a fair one.
    """
    ids = [f"bc-{i:04d}" for i in range(1, len(frame) + 1)]
    keyed = frame.assign(**{ID_COLUMN: ids})[[ID_COLUMN, *frame.columns]]
    held = np.random.default_rng(_SEED).random(len(keyed)) < BATCH_SHARE
    batch = keyed[held]
    return {
        "": keyed[~held],
        "-batch": batch.drop(columns=[target]),
        "-labels": batch[[ID_COLUMN, target]],
    }


def example_files() -> dict[str, pd.DataFrame]:
    """Every example file by its name under the data folder."""
    files: dict[str, pd.DataFrame] = {}
    for name, (loader, target) in EXAMPLES.items():
        frame = _frame(loader, target)
        if name == "breast_cancer":
            files.update({f"{name}{suffix}.csv": part for suffix, part in closed_loop_files(frame, target).items()})
        else:
            files[f"{name}.csv"] = frame
    return files


def write_examples(folder: Path) -> list[Path]:
    """Write each example file to `<folder>/<name>.csv`; a file already holding the same bytes is
    left alone (its modification time, and so any digest-based trigger, stays quiet)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in example_files().items():
        path = folder / name
        text = frame.to_csv(index=False)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
