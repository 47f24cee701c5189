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
        lambda f: _text(f, "semicolons.csv", good_frame(seed=1).to_csv(index=False, sep=";").encode()),
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


# --- data as people have it -------------------------------------------------------------------
# Each shape is a file a contract is drafted from (it must pass its own draft) and a broken batch
# of the same shape, refused with a message that is right about the data. Written as CSV text and
# read back through the loader, so the column types are the ones a user's file gets.


@dataclass(frozen=True)
class Shape:
    id: str
    column: str
    problem: str
    good: Callable[[], pd.DataFrame]
    broken: Callable[[pd.DataFrame], pd.DataFrame]
    also_good: Callable[[pd.DataFrame], pd.DataFrame] | None = None  # another batch the draft accepts


def _base(rows: int = 300, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows).round(4)
    return pd.DataFrame({"x": x, "label": np.where(x + rng.normal(scale=0.7, size=rows) > 0, "yes", "no")})


def _column(values: Callable[[np.random.Generator, int], Any], rows: int = 300) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        frame = _base(rows)
        frame.insert(0, "value", values(np.random.default_rng(11), rows))
        return frame

    return build


def _replace(column: str, rows: list[int], value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        return _set(frame, column, rows, value)

    return change


def _iso_dates(rng: np.random.Generator, rows: int) -> Any:
    # vega's cars: one date per model year, many distinct days here
    return (pd.Timestamp("1970-01-01") + pd.to_timedelta(rng.integers(0, 4383, rows), unit="D")).strftime("%Y-%m-%d")


def _few_dates(rng: np.random.Generator, rows: int) -> Any:
    return rng.choice([f"{year}-01-01" for year in range(1970, 1983)], rows)  # cars' `Year`: 13 values


def _datetimes(rng: np.random.Generator, rows: int) -> Any:
    stamps = pd.Timestamp("2024-03-01 08:00") + pd.to_timedelta(rng.integers(0, 90 * 24 * 60, rows), unit="min")
    return stamps.strftime("%Y-%m-%d %H:%M:%S")


def _zoned(rng: np.random.Generator, rows: int) -> Any:
    stamps = pd.Timestamp("2024-03-01 08:00") + pd.to_timedelta(rng.integers(0, 90 * 24 * 60, rows), unit="min")
    return [
        s + z
        for s, z in zip(stamps.strftime("%Y-%m-%dT%H:%M:%S"), rng.choice(["Z", "+02:00", "-05:00"], rows), strict=True)
    ]


def _numbers_with_question_marks(rng: np.random.Generator, rows: int) -> Any:
    values = rng.integers(46, 231, rows).astype(str).astype(object)  # cars' horsepower, '?' where unknown
    values[[5, 77, 130]] = "?"
    return values


def _true_false(rng: np.random.Generator, rows: int) -> Any:
    values = rng.choice(["TRUE", "FALSE"], rows).astype(object)
    values[[3, 40]] = ""  # a blank: read as missing, the column holds True/False/None
    return values


def _unnamed_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"engine.size": "engine_size"})


SHAPES: list[Shape] = [
    Shape("iso_dates_many", "value", r"1 value outside \[1968-1[0-2]-\d\d, 1983-0[2-4]-\d\d\] \(e.g. 2091-05-01\)",
          _column(_iso_dates), _replace("value", [9], "2091-05-01")),
    Shape("iso_dates_few", "value", r"holds str values, the contract expects dates \(e.g. '1970-13-01'\)",
          _column(_few_dates), _replace("value", [4], "1970-13-01")),
    Shape("datetimes", "value", r"1 value outside \[2024-02-2\dT\d\d:00:00, 2024-06-\d\dT\d\d:00:00\] "
          r"\(e.g. 2025-01-01T00:00:00\)", _column(_datetimes), _replace("value", [2], "2025-01-01 00:00:00")),
    Shape("datetimes_with_zones", "value", r"holds datetime64\[s\] values, the contract expects date-times with a "
          r"time zone", _column(_zoned), lambda f: f.assign(value=f["value"].str[:19].str.replace("T", " "))),
    Shape("numbers_with_a_missing_spelling", "value", r"2 values neither numbers nor the missing-value spelling '\?' "
          r"\(e.g. 'abc'\)", _column(_numbers_with_question_marks), _replace("value", [8, 9], "abc"),
          also_good=lambda f: f.assign(value=f["value"].replace("?", "120"))),
    Shape("yes_no_booleans", "value", r"1 value not in the contract's categories \['no', 'yes'\] \(e.g. 'maybe'\)",
          _column(lambda rng, rows: rng.choice(["yes", "no"], rows)), _replace("value", [6], "maybe")),
    Shape("true_false_booleans", "value", r"holds str values, the contract expects booleans \(e.g. 'perhaps'\)",
          _column(_true_false), _replace("value", [6], "perhaps"),
          also_good=lambda f: f.assign(value=f["value"].replace("", "TRUE"))),
    Shape("names_with_spaces_dots_unicode", "engine.size",
          r"column 'engine.size' is missing and column 'engine_size' is not in the contract \(renamed\?\)",
          lambda: _base().assign(**{"miles per gallon": 21.5, "engine.size": np.arange(300) % 7, "größe (m²)": "ü"}),
          _unnamed_columns),
    Shape("constant_column", "value", r"1 value not in the contract's categories \['same'\] \(e.g. 'other'\)",
          _column(lambda rng, rows: ["same"] * rows), _replace("value", [0], "other")),
    Shape("mostly_missing_column", "value", r"1 value outside \[-?[\d.]+, [\d.]+\] \(e.g. 5000\)",
          _column(lambda rng, rows: np.where(np.arange(rows) % 100 == 0, rng.normal(size=rows).round(3), np.nan)),
          _replace("value", [50], 5000.0)),
]  # fmt: skip
