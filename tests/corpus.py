"""The bad-input corpus: broken data files generated on the fly, each with the refusal it must get.

Every case writes its file(s) into a folder and returns the path to train on. `stage` says who
refuses it: the loader ("load": unreadable before any contract) or the contract ("contract").
The expected message names `file`, `column` (when there is one) and matches `problem`.
Shared by tests/unit (loader and contract functions) and tests/flows (the flow and the CLI).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tests.factories import classification_frame

MODEL = "churn"
TARGET = "label"


def good_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """row_id, x1, x2 (numeric), colour (red/green/blue), label (yes/no)."""
    return classification_frame(rows=rows, seed=seed)


def spec_document(name: str, data: str, **data_options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "data": {"path": data, "target": TARGET, "id_column": "row_id", **data_options},
    }


def write_spec_file(folder: Path, stem: str, document: dict[str, Any]) -> Path:
    path = folder / f"{stem}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass(frozen=True)
class Case:
    id: str
    stage: str
    file: str
    column: str | None
    problem: str
    write: Callable[[Path], Path]
    data_options: dict[str, Any] = field(default_factory=dict)
    model: str = MODEL


def _csv(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def _text(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _with(change: Callable[[pd.DataFrame], pd.DataFrame], name: str) -> Callable[[Path], Path]:
    return lambda folder: _csv(folder, name, change(good_frame(seed=1)))


def _set(frame: pd.DataFrame, column: str, rows: list[int], value: Any) -> pd.DataFrame:
    frame = frame.copy()
    if not isinstance(value, str) and frame[column].dtype.kind in "iuf":
        frame[column] = frame[column].astype("float64")
    else:
        frame[column] = frame[column].astype(object)
    frame.loc[rows, column] = value
    return frame


def _not_utf8(folder: Path) -> Path:
    content = good_frame(seed=1).to_csv(index=False).encode()
    # A Latin-1 export: "café" as one 0xE9 byte, which UTF-8 never allows on its own.
    return _text(folder, "latin1.csv", content.replace(b",red,", b",caf\xe9,", 1))


def _ragged(folder: Path) -> Path:
    lines = good_frame(seed=1).to_csv(index=False).splitlines()
    lines[5] += ",surplus"
    return _text(folder, "ragged.csv", ("\n".join(lines) + "\n").encode())


def _parquet_glob(folder: Path) -> Path:
    frame = good_frame(seed=1)
    (folder / "parts").mkdir(parents=True, exist_ok=True)
    frame.iloc[:200].to_parquet(folder / "parts" / "part-0.parquet")
    other = frame.iloc[200:].copy()
    other["x1"] = other["x1"].map(lambda v: f"{v:.2f} kg")  # another export: numbers as text
    other.to_parquet(folder / "parts" / "part-1.parquet")
    return folder / "parts" / "*.parquet"


def _parquet_renamed(folder: Path) -> Path:
    path = folder / "renamed.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    good_frame(seed=1).rename(columns={"x2": "feature_2"}).to_parquet(path)
    return path


def _duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    repeated = frame.iloc[:100].copy()
    repeated["row_id"] = np.arange(len(frame), len(frame) + 100)  # new ids: the same records again
    return pd.concat([frame, repeated], ignore_index=True)


def _leaky(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["outcome_code"] = frame[TARGET].map({"yes": 1, "no": 0})
    return frame


CASES: list[Case] = [
    Case("missing_path", "load", "absent.csv", None, r"no such file", lambda f: f / "absent.csv"),
    Case(
        "empty_glob",
        "load",
        "nothing_*.csv",
        None,
        r"the glob matches no file",
        lambda f: f / "nothing_*.csv",
    ),
    Case(
        "empty_file",
        "load",
        "empty.csv",
        None,
        r"the file is empty",
        lambda f: _text(f, "empty.csv", b""),
    ),
    Case(
        "header_only",
        "load",
        "header.csv",
        None,
        r"a header but no data rows",
        lambda f: _text(f, "header.csv", b"row_id,x1,x2,colour,label\n"),
    ),
    Case(
        "not_utf8",
        "load",
        "latin1.csv",
        "colour",
        r"not UTF-8 text: byte 0xe9 at line \d+",
        _not_utf8,
    ),
    Case(
        "ragged_rows",
        "load",
        "ragged.csv",
        None,
        r"malformed CSV: line 6 has 6 fields, the header has 5",
        _ragged,
    ),
    Case(
        "wrong_delimiter",
        "load",
        "semicolons.csv",
        None,
        r"the delimiter looks like ';'",
        lambda f: _text(
            f, "semicolons.csv", good_frame(seed=1).to_csv(index=False, sep=";").encode()
        ),
    ),
    Case(
        "parquet_other_schema",
        "load",
        "part-1.parquet",
        "x1",
        r"holds text \(str\) here but number",
        _parquet_glob,
    ),
    Case(
        "oversize",
        "load",
        "big.csv",
        None,
        r"3.2 kB is above the 0.001 MB limit",
        lambda f: _text(f, "big.csv", b"\x00\xff not even CSV " * 200),
        {"max_file_mb": 0.001},
    ),
    Case(
        "missing_column",
        "contract",
        "no_x2.csv",
        "x2",
        r"'x2' missing",
        _with(lambda d: d.drop(columns=["x2"]), "no_x2.csv"),
    ),
    Case(
        "renamed_column",
        "contract",
        "renamed.csv",
        "x2",
        r"'x2' is missing and column 'X2' is not in the contract \(renamed\?\)",
        _with(lambda d: d.rename(columns={"x2": "X2"}), "renamed.csv"),
    ),
    Case(
        "parquet_renamed_column",
        "contract",
        "renamed.parquet",
        "x2",
        r"'feature_2' is not in the contract",
        _parquet_renamed,
    ),
    Case(
        "extra_column",
        "contract",
        "extra.csv",
        "notes",
        r"unexpected column 'notes'",
        _with(lambda d: d.assign(notes="checked"), "extra.csv"),
    ),
    Case(
        "text_in_numeric",
        "contract",
        "text.csv",
        "x1",
        r"holds str values, the contract expects numbers \(e.g. 'abc'\)",
        _with(lambda d: _set(d, "x1", [3, 9], "abc"), "text.csv"),
    ),
    Case(
        "nan_beyond_contract",
        "contract",
        "nan.csv",
        "x2",
        r"5 missing values, the contract allows none",
        _with(lambda d: _set(d, "x2", [1, 2, 3, 4, 5], np.nan), "nan.csv"),
    ),
    Case(
        "infinity",
        "contract",
        "inf.csv",
        "x2",
        r"2 infinite values \(e.g. inf, -inf\)",
        _with(
            lambda d: _set(d, "x2", [7, 8], np.inf).pipe(lambda x: _set(x, "x2", [8], -np.inf)),
            "inf.csv",
        ),
    ),
    Case(
        "missing_target",
        "contract",
        "unlabelled.csv",
        TARGET,
        r"3 missing values \(target\)",
        _with(lambda d: _set(d, TARGET, [0, 10, 20], None), "unlabelled.csv"),
    ),
    Case(
        "single_class",
        "contract",
        "one_class.csv",
        TARGET,
        r"a single class 'yes' in 400 rows",
        _with(lambda d: d.assign(label="yes"), "one_class.csv"),
    ),
    Case(
        "out_of_range",
        "contract",
        "range.csv",
        "x1",
        r"2 values outside \[-?[\d.]+, [\d.]+\] \(e.g. 999, -400\)",
        _with(
            lambda d: _set(d, "x1", [11, 12], 999.0).pipe(lambda x: _set(x, "x1", [12], -400.0)),
            "range.csv",
        ),
    ),
    Case(
        "unseen_category",
        "contract",
        "purple.csv",
        "colour",
        r"not in the contract's categories .* \(e.g. 'purple'\)",
        _with(lambda d: _set(d, "colour", [4], "purple"), "purple.csv"),
    ),
    Case(
        "duplicated_rows",
        "contract",
        "dupes.csv",
        None,
        r"100 rows repeat another row exactly; 200 rows \(40.0%\) have an identical twin",
        _with(_duplicates, "dupes.csv"),
    ),
    Case(
        "label_leakage",
        "contract",
        "leaky.csv",
        "outcome_code",
        r"copies the target 'label'.*label leakage",
        _with(_leaky, "leaky.csv"),
        model="leaky",
    ),
]


def case_ids() -> list[str]:
    return [case.id for case in CASES]
