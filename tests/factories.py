"""Small, deterministic datasets, specs and projects written to real files for the flow and e2e tiers."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml


def classification_frame(rows: int = 400, seed: int = 0, noise: float = 0.5) -> pd.DataFrame:
    """A binary target driven by two numeric features and one categorical one."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    signal = 1.5 * x1 - x2 + np.where(colour == "red", 1.0, 0.0) + rng.normal(scale=noise, size=rows)
    return pd.DataFrame(
        {
            "row_id": np.arange(rows),
            "x1": x1.round(4),
            "x2": x2.round(4),
            "colour": colour,
            "label": np.where(signal > 0, "yes", "no"),
        }
    )


def write_spec(project: Path, name: str, data: str, **sections: object) -> Path:
    spec = {"name": name, "data": {"path": data, "target": "label", "id_column": "row_id"}, **sections}
    path = project / "pipelines" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_csv(project: Path, relative: str, frame: pd.DataFrame) -> Path:
    path = project / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@contextmanager
def project_home(root: Path) -> Iterator[Path]:
    """`root` as the project (CONVEYOR_HOME, its own SQLite MLflow store) for the duration."""
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVEYOR_HOME", str(root))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("CONVEYOR_ARTIFACT_ROOT", raising=False)
        yield root


def copy_project(template: Path, destination: Path) -> Path:
    """A copy of a trained project that owns its stores: nothing in it points back at `template`.

    The SQLite MLflow store records absolute paths (artifact locations, dataset sources, data
    path parameters); they are rewritten to the copy. Artifact files are copied byte for byte, so
    the recorded artifact digests still hold.
    """
    shutil.copytree(template, destination, dirs_exist_ok=True)
    store = destination / ".conveyor" / "mlflow.db"
    if store.exists():
        old, new = f"{template.resolve()}/", f"{destination.resolve()}/"
        with closing(sqlite3.connect(store)) as db, db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in (row[1] for row in db.execute(f'PRAGMA table_info("{table}")')):
                    db.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE typeof("{column}") = ? AND instr("{column}", ?) > 0',
                        (old, new, "text", old),
                    )
    return destination


def trained_project(root: Path, rows: int = 400, **spec_sections: object) -> Path:
    """A project whose `churn` (on `data/train.csv`) was trained once through the flow: v1, champion."""
    from flows.training import training_flow

    with project_home(root):
        write_csv(root, "data/train.csv", classification_frame(rows=rows))
        training_flow(spec=str(write_spec(root, "churn", "../data/train.csv", **spec_sections)))
    return root
