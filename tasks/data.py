"""Load a spec's data from files, take its content digest, and split it deterministically."""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from prefect import task

from conveyor.errors import DataError, retry_unless_expected
from conveyor.spec import PipelineSpec, TaskType

_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Dataset:
    """A loaded frame with the files it came from and the sha256 of their bytes."""

    frame: pd.DataFrame
    digest: str
    files: tuple[str, ...]
    file_digests: dict[str, str] = field(default_factory=dict)


def resolve_files(pattern: str) -> list[str]:
    """The data files a path or glob names, sorted; a clear error when there are none."""
    if any(char in pattern for char in "*?["):
        files = sorted(path for path in glob.glob(pattern, recursive=True) if Path(path).is_file())
        if not files:
            raise DataError(f"{pattern}: the glob matches no file")
        return files
    path = Path(pattern)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix in {".csv", ".parquet", ".pq"})
        if not files:
            raise DataError(f"{pattern}: the folder holds no .csv or .parquet file")
        return files
    if not path.is_file():
        raise DataError(f"{pattern}: no such file")
    return [str(path)]


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def combined_digest(file_digests: dict[str, str]) -> str:
    """One digest for a set of files: their content digests, in sorted order, names ignored."""
    digest = hashlib.sha256()
    for value in sorted(file_digests.values()):
        digest.update(value.encode())
    return digest.hexdigest()


def read_file(path: str, max_file_mb: float) -> pd.DataFrame:
    """Read one CSV or Parquet file; refuse it unread when it is larger than the limit."""
    size_mb = Path(path).stat().st_size / 1e6
    if size_mb > max_file_mb:
        raise DataError(f"{path}: {size_mb:.1f} MB is above the {max_file_mb:g} MB limit (data.max_file_mb)")
    if size_mb == 0:
        raise DataError(f"{path}: the file is empty")
    suffix = Path(path).suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        return pd.read_csv(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot be read as {suffix.lstrip('.') or 'CSV'}: {exc}") from None


def load_dataset(pattern: str, max_file_mb: float = 2048) -> Dataset:
    """Read every file the pattern names into one frame, with per-file and combined digests."""
    files = resolve_files(pattern)
    digests = {path: file_digest(path) for path in files}
    frames = [read_file(path, max_file_mb) for path in files]
    first = list(frames[0].columns)
    for path, frame in zip(files[1:], frames[1:], strict=True):
        if list(frame.columns) != first:
            raise DataError(f"{path}: columns {list(frame.columns)} differ from {files[0]}'s {first}")
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return Dataset(frame=frame, digest=combined_digest(digests), files=tuple(files), file_digests=digests)


def infer_task(target: pd.Series, max_classes: int = 20) -> TaskType:
    """binary for two values, multiclass for text or few integer values, else regression."""
    values = target.dropna()
    unique = values.nunique()
    if unique <= 2:
        return "binary"
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        return "multiclass"
    integral = pd.api.types.is_integer_dtype(values) or bool((values == values.round()).all())
    return "multiclass" if integral and unique <= max_classes else "regression"


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def feature_frame(spec: PipelineSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns: everything but the target, the id and the dropped columns."""
    excluded = {spec.data.target, *spec.data.drop}
    if spec.data.id_column:
        excluded.add(spec.data.id_column)
    return frame[[column for column in frame.columns if column not in excluded]]


def split_frame(spec: PipelineSpec, frame: pd.DataFrame) -> Split:
    """Hold out the latest rows when a time column is set, else a seeded (stratified) split."""
    from sklearn.model_selection import train_test_split

    settings = spec.data.split
    y = frame[spec.data.target]
    X = feature_frame(spec, frame)
    if settings.time_column:
        order = frame[settings.time_column].sort_values(kind="stable").index
        cut = int(round(len(order) * (1 - settings.test_size)))
        train_idx, test_idx = order[:cut], order[cut:]
        X = X.drop(columns=[settings.time_column])
        return Split(X.loc[train_idx], X.loc[test_idx], y.loc[train_idx], y.loc[test_idx])
    stratify = y if spec.task in {"binary", "multiclass"} and y.value_counts().min() >= 2 else None
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=settings.test_size, random_state=settings.seed, stratify=stratify
    )
    return Split(X_train, X_test, y_train, y_test)


@task(name="load_data", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_unless_expected)
def load_data(spec: PipelineSpec, data_path: str | None = None) -> Dataset:
    """Read the spec's data (or an override path) and take its content digest."""
    pattern = spec.resolve_path(data_path or spec.data.path)
    return load_dataset(pattern, spec.data.max_file_mb)


@task(name="split_data")
def split_data(spec: PipelineSpec, frame: pd.DataFrame) -> Split:
    return split_frame(spec, frame)
