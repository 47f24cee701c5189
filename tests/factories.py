"""Small, deterministic datasets and specs written to real files for the flow and e2e tiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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
