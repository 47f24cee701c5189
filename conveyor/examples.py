"""The bundled example datasets: real data that ships inside scikit-learn, written as CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


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


EXAMPLES = {
    "breast_cancer": ("load_breast_cancer", "diagnosis"),
    "wine": ("load_wine", "cultivar"),
    "diabetes": ("load_diabetes", "progression"),
}


def write_examples(folder: Path) -> list[Path]:
    """Write each example dataset to `<folder>/<name>.csv` (unchanged files are left alone)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (loader, target) in EXAMPLES.items():
        path = folder / f"{name}.csv"
        if not path.exists():
            _frame(loader, target).to_csv(path, index=False)
        written.append(path)
    return written
