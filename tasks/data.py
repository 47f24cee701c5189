"""Load a spec's data from files, take its content digest, and split it deterministically.

Every refusal is a DataError whose one-line message names the file (and the column or line
where there is one): a user must be able to fix the file from the message alone.
"""

from __future__ import annotations

import bisect
import csv
import glob
import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from conveyor import remote
from conveyor.errors import DataError
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec, TaskType

_READ_CHUNK = 1 << 20
_PARQUET = {".parquet", ".pq"}
_CSV = {".csv", ".tsv", ".txt"}
# More files than this in one dataset is a mistake (a path at the wrong folder), not a dataset.
MAX_FILES = 1000
_COMPRESSED = {".gz", ".bz2", ".xz", ".zst", ".zip"}
# Delimiters a CSV export may have used instead of the comma, in the order they are tried.
_OTHER_DELIMITERS = (";", "\t", "|")


@dataclass(frozen=True)
class Dataset:
    """A loaded frame with the files it came from and the sha256 of their bytes."""

    frame: pd.DataFrame
    digest: str
    files: tuple[str, ...]
    file_digests: dict[str, str] = field(default_factory=dict)
    source: str = ""
    row_counts: tuple[int, ...] = ()

    def file_of_row(self, position: int) -> str:
        """The file that row `position` of the frame was read from."""
        if len(self.files) == 1 or not self.row_counts:
            return self.files[0]
        ends = list(_cumulative(self.row_counts))
        return self.files[min(bisect.bisect_right(ends, position), len(self.files) - 1)]


def _cumulative(counts: Sequence[int]) -> list[int]:
    total, ends = 0, []
    for count in counts:
        total += count
        ends.append(total)
    return ends


def display_path(path: str) -> str:
    """A path as a user would type it: relative to the working directory when inside it."""
    if "://" in path:
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def _kind(path: str) -> str:
    suffixes = [suffix.lower() for suffix in Path(path).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSED:
        suffixes.pop()
    return "parquet" if suffixes and suffixes[-1] in _PARQUET else "csv"


def resolve_files(pattern: str, max_files: int = MAX_FILES) -> list[str]:
    """The data files a path, glob or URI names, sorted; a clear error when there are none, when the
    path is a symlink loop, or when there are more than `max_files` (counted before any is read)."""
    if remote.is_uri(pattern):
        return _bounded(pattern, remote.files(pattern, _PARQUET | _CSV), max_files)
    if any(char in pattern for char in "*?["):
        files = sorted(path for path in glob.glob(pattern, recursive=True) if Path(path).is_file())
        if not files:
            raise DataError(f"{display_path(pattern)}: the glob matches no file")
        return _bounded(pattern, files, max_files)
    path = Path(pattern)
    if path.is_dir():
        data_suffixes = _PARQUET | _CSV
        files = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in data_suffixes)
        if not files:
            raise DataError(f"{display_path(pattern)}: the folder holds no .csv or .parquet file")
        return _bounded(pattern, files, max_files)
    if not path.exists():
        if path.is_symlink():
            raise DataError(
                f"{display_path(pattern)}: a symbolic link that leads nowhere (a loop, or a missing target)"
            )
        parent = path.parent
        where = "" if parent.is_dir() else f" (the folder {display_path(str(parent))} does not exist)"
        raise DataError(f"{display_path(pattern)}: no such file{where}")
    if not path.is_file():
        raise DataError(f"{display_path(pattern)}: not a regular file")
    return [str(path)]


def _bounded(pattern: str, files: list[str], max_files: int) -> list[str]:
    if len(files) > max_files:
        raise DataError(
            f"{display_path(pattern)}: names {len(files)} files, more than the {max_files} one dataset may hold "
            "(combine them into fewer, larger files, or point data.path at a narrower glob)"
        )
    return files


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with remote.open_binary(path) as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def combined_digest(file_digests: dict[str, str]) -> str:
    """One digest for a set of files: their content digests, in sorted order, names ignored."""
    digest = hashlib.sha256()
    for value in sorted(file_digests.values()):
        digest.update(value.encode())
    return digest.hexdigest()


def _size(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} bytes"


def check_size(path: str, max_file_mb: float) -> None:
    """Refuse a file above the limit, or an empty one, from its size alone (nothing is read).

    A compressed file is measured by what it expands to (streamed, stopping at the limit), so a
    small archive cannot unpack into unbounded memory."""
    size = remote.size(path) if remote.is_uri(path) else Path(path).stat().st_size
    if size > max_file_mb * 1e6:
        raise DataError(
            f"{display_path(path)}: {_size(size)} is above the {max_file_mb:g} MB limit "
            "(raise data.max_file_mb in the spec to accept it)"
        )
    if size == 0:
        raise DataError(f"{display_path(path)}: the file is empty (0 bytes)")
    if Path(path).suffix.lower() in _COMPRESSED and not _expands_within(path, int(max_file_mb * 1e6)):
        raise DataError(
            f"{display_path(path)}: expands to more than the {max_file_mb:g} MB limit "
            "(raise data.max_file_mb in the spec to accept it)"
        )


def _expands_within(path: str, limit: int) -> bool:
    """Whether a compressed file's content is at most `limit` bytes, read in chunks and stopped early."""
    import zipfile

    import pyarrow as pa

    if remote.is_uri(path):
        return remote.expands_within(path, limit)
    if Path(path).suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            streams = [archive.open(info) for info in archive.infolist()]
            total = 0
            for stream in streams:
                with stream:
                    while chunk := stream.read(1 << 20):
                        total += len(chunk)
                        if total > limit:
                            return False
            return True
    total = 0
    with pa.input_stream(path, compression="detect") as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
            if total > limit:
                return False
    return True


def data_digest(pattern: str, max_file_mb: float = 2048) -> str:
    """The combined digest of the files a pattern names; files over the limit are refused unread."""
    files = resolve_files(pattern)
    for path in files:
        check_size(path, max_file_mb)
    return combined_digest({path: file_digest(path) for path in files})


def _first_bad_utf8(path: str) -> tuple[int, int, int] | None:
    """(line, column, byte) of the first byte that is not UTF-8, or None when the file decodes."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line, offset_in_line = 1, 0
    with remote.open_binary(path) as handle:
        while chunk := handle.read(_READ_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                before = chunk[: exc.start]
                newlines = before.count(b"\n")
                column = exc.start - (before.rfind(b"\n") + 1) if newlines else offset_in_line + exc.start
                return line + newlines, column + 1, chunk[exc.start]
            newlines = chunk.count(b"\n")
            line += newlines
            offset_in_line = len(chunk) - chunk.rfind(b"\n") - 1 if newlines else offset_in_line + len(chunk)
    return None


def _ragged_line(path: str, delimiter: str = ",") -> tuple[int, int, int] | None:
    """(line, fields, header fields) of the first row whose field count differs from the header."""
    with io.TextIOWrapper(remote.open_binary(path), newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return None
        for row in reader:
            if row and len(row) != len(header):
                return reader.line_num, len(row), len(header)
    return None


def _utf8_error(path: str, column: str | None = None) -> DataError:
    where = _first_bad_utf8(path)
    about = f"column {column!r}: " if column else ""
    if where is None:
        return DataError(f"{display_path(path)}: {about}not UTF-8 text (re-save the file as UTF-8)")
    line, col, byte = where
    return DataError(
        f"{display_path(path)}: {about}not UTF-8 text: byte 0x{byte:02x} at line {line}, "
        f"column {col} (re-save the file as UTF-8)"
    )


def _read_csv(path: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, engine="pyarrow")
    except pd.errors.EmptyDataError:
        raise DataError(f"{display_path(path)}: no header row (the file holds only blank lines)") from None
    except UnicodeDecodeError:
        raise _utf8_error(path) from None
    except Exception as exc:  # pyarrow raises several unrelated types for a malformed file
        text = str(exc)
        if "UTF8" in text or "UTF-8" in text or "utf-8" in text:
            raise _utf8_error(path) from None
        ragged = _ragged_line(path)
        if ragged is not None:
            line, fields, expected = ragged
            raise DataError(
                f"{display_path(path)}: malformed CSV: line {line} has {fields} "
                f"field{'s' * (fields != 1)}, the header has {expected} (ragged rows)"
            ) from None
        raise DataError(f"{display_path(path)}: cannot be read as CSV: {text.splitlines()[0]}") from None
    # pyarrow reads text that is not UTF-8 as raw bytes rather than failing: name the column.
    for column in frame.columns:
        if frame[column].dtype == object:
            sample = frame[column].dropna()
            if len(sample) and sample.map(type).eq(bytes).any():
                raise _utf8_error(path, str(column))
    return frame


def _read_parquet(path: str) -> pd.DataFrame:
    try:
        # storage_options: through fsspec (s3fs) as every other read of a URI, not pyarrow's own S3 client
        return pd.read_parquet(path, storage_options={} if remote.is_uri(path) else None)
    except Exception as exc:  # pyarrow.ArrowInvalid, OSError, ... for a file that is not Parquet
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{display_path(path)}: cannot be read as Parquet: {first}") from None


def _single_column_problem(path: str, frame: pd.DataFrame, expected_columns: Sequence[str] | None) -> str | None:
    """Why a CSV that parsed to one column is wrong (another delimiter), or None when it is fine."""
    if frame.shape[1] != 1:
        return None
    header = str(frame.columns[0])
    for delimiter in _OTHER_DELIMITERS:
        if delimiter in header:
            shown = {"\t": "a tab"}.get(delimiter, repr(delimiter))
            return (
                f"parsed as a single column {header[:60]!r}: the delimiter looks like {shown}; "
                "Conveyor reads comma-separated files (re-export the file with commas)"
            )
    if expected_columns is not None and len(expected_columns) > 1:
        return (
            f"parsed as a single column {header[:60]!r} but the contract expects "
            f"{len(expected_columns)} columns: wrong delimiter?"
        )
    return None


def read_file(path: str, max_file_mb: float, expected_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read one CSV or Parquet file; refuse it unread when it is larger than the limit."""
    check_size(path, max_file_mb)
    if _kind(path) == "parquet":
        frame = _read_parquet(path)
    else:
        frame = _read_csv(path)
        if problem := _single_column_problem(path, frame, expected_columns):
            raise DataError(f"{display_path(path)}: {problem}")
    if frame.shape[1] == 0:
        raise DataError(f"{display_path(path)}: no columns")
    if len(frame) == 0:
        raise DataError(f"{display_path(path)}: a header but no data rows")
    return frame


def _family(dtype: object) -> str:
    """A coarse type family: files of one dataset may differ in width (int32/int64), not in kind."""
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "text"


def _schema_difference(path: str, frame: pd.DataFrame, first_path: str, first: pd.DataFrame) -> str | None:
    """How a file's columns differ from the first file's (order aside), or None."""
    if set(frame.columns) != set(first.columns):
        missing = [c for c in first.columns if c not in frame.columns]
        extra = [c for c in frame.columns if c not in first.columns]
        parts = []
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            parts.append(f"column {missing[0]!r} missing{more}")
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            parts.append(f"unexpected column {extra[0]!r}{more}")
        return f"{'; '.join(parts)}: the schema differs from {display_path(first_path)}"
    for column in first.columns:
        ours, theirs = _family(frame[column].dtype), _family(first[column].dtype)
        # An all-missing column reads as numbers whatever it was meant to hold.
        if ours != theirs and frame[column].notna().any() and first[column].notna().any():
            return (
                f"column {column!r} holds {ours} ({frame[column].dtype}) here but "
                f"{theirs} ({first[column].dtype}) in {display_path(first_path)}"
            )
    return None


def load_dataset(pattern: str, max_file_mb: float = 2048, *, expected_columns: Sequence[str] | None = None) -> Dataset:
    """Read every file the pattern names into one frame, with per-file and combined digests.

    Sizes are checked for every file before any is read. `expected_columns` (from the contract,
    when there is one) turns a CSV that parsed to one column into a clear wrong-delimiter error.
    """
    files = resolve_files(pattern)
    for path in files:
        check_size(path, max_file_mb)
    digests: dict[str, str] = {}
    frames: list[pd.DataFrame] = []
    for path in files:
        digests[path] = file_digest(path)
        frame = read_file(path, max_file_mb, expected_columns)
        if frames and (problem := _schema_difference(path, frame, files[0], frames[0])):
            raise DataError(f"{display_path(path)}: {problem}")
        frames.append(frame[list(frames[0].columns)] if frames else frame)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return Dataset(
        frame=frame,
        digest=combined_digest(digests),
        files=tuple(files),
        file_digests=digests,
        source=pattern,
        row_counts=tuple(len(part) for part in frames),
    )


def contract_columns(path: Path) -> list[str] | None:
    """The exact column set a saved contract expects, or None when there is no usable contract."""
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for expectation in suite.get("expectations", []) if isinstance(suite, dict) else []:
        if expectation.get("type") == "expect_table_columns_to_match_set":
            columns = expectation.get("kwargs", {}).get("column_set")
            return list(columns) if isinstance(columns, list) else None
    return None


def infer_task(target: pd.Series, max_classes: int = 20) -> TaskType:
    """binary for two values, multiclass for text or few integer codes, else regression.

    Integers are class codes when there are at most `max_classes` of them and they repeat (a
    value seen twice on average, or at most 3 values): a small table of integer measurements
    (16 employment counts, 21 stack losses) is a regression, not 16 classes of one row each.
    """
    values = target.dropna()
    unique = values.nunique()
    if unique <= 2:
        return "binary"
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        return "multiclass"
    integral = pd.api.types.is_integer_dtype(values) or bool((values == values.round()).all())
    repeated = unique <= 3 or len(values) >= 2 * unique
    return "multiclass" if integral and unique <= max_classes and repeated else "regression"


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


# Headers that R's write.csv (`""`, read as `Unnamed: 0`), Rdatasets (`rownames`) or pandas'
# to_csv with its index give to row names.
_ROW_NAME_HEADER = re.compile(r"^(\s*|unnamed: \d+|rownames|row\.names|row_names)$", re.IGNORECASE)
# Names that say "identifier": id, ID, row_id, user-id, index, idx; camelCase customerId, customerID.
_ID_NAME = re.compile(r"^(id|index|idx)$|[_\-. ](id|index|idx)$", re.IGNORECASE)
_CAMEL_ID_NAME = re.compile(r"[a-z](Id|ID)$")


def _is_row_number(values: pd.Series) -> bool:
    """Consecutive integers from 0 or 1, in file order (either direction): a row counter."""
    if not pd.api.types.is_integer_dtype(values) or values.isna().any() or len(values) < 2:
        return False
    steps = values.diff().iloc[1:]
    ascending = bool((steps == 1).all()) and int(values.iloc[0]) in (0, 1)
    descending = bool((steps == -1).all()) and int(values.iloc[-1]) in (0, 1)
    return ascending or descending


def id_like_columns(spec: PipelineSpec, frame: pd.DataFrame) -> dict[str, str]:
    """Columns that identify rows rather than describe them, each with the reason it was recognised.

    Trained on, a row id memorises the file's order: sorted by the target, it inflates the holdout
    score several times over. Off when the spec names its `data.id_column` or sets
    `data.detect_id_columns: false`.
    """
    if spec.data.id_column or not spec.data.detect_id_columns:
        return {}
    skip = {spec.data.target, *spec.data.drop, spec.data.split.time_column}
    found: dict[str, str] = {}
    for column in frame.columns:
        if column in skip:
            continue
        values = frame[column]
        name = str(column)
        if _ROW_NAME_HEADER.match(name):
            found[name] = "row names (an unnamed or `rownames` first column, as R and pandas write them)"
        elif _is_row_number(values):
            found[name] = "a row number (consecutive integers from 0 or 1)"
        elif (
            (_ID_NAME.search(name) or _CAMEL_ID_NAME.search(name))
            and not pd.api.types.is_float_dtype(values)
            and not pd.api.types.is_bool_dtype(values)
            and values.notna().all()
            and values.is_unique
        ):
            found[name] = "an identifier (named like one, a unique value on every row)"
    return found


def id_columns_note(found: dict[str, str]) -> str | None:
    """One line for the run saying which columns were left out as ids, or None."""
    if not found:
        return None
    listed = "; ".join(f"{column!r}: {reason}" for column, reason in found.items())
    return (
        f"left out of the features as row ids: {listed} "
        "(set data.id_column, or data.detect_id_columns: false to train on them)"
    )


def feature_frame(spec: PipelineSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns: everything but the target, the ids, the dropped columns and, with
    `governance.exclude_sensitive`, the sensitive attributes."""
    excluded = {spec.data.target, *spec.data.drop, *id_like_columns(spec, frame)}
    if spec.governance.exclude_sensitive:
        excluded.update(spec.governance.sensitive_attributes)
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
        split = Split(X.loc[train_idx], X.loc[test_idx], y.loc[train_idx], y.loc[test_idx])
    else:
        classes = spec.task in {"binary", "multiclass"}
        stratify = y if classes and y.value_counts().min() >= 2 else None
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=settings.test_size, random_state=settings.seed, stratify=stratify
        )
        split = Split(X_train, X_test, y_train, y_test)
    if spec.task in {"binary", "multiclass"}:
        check_holdout_classes(spec.data.target, split.y_train, split.y_test)
    return split


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages show `3`, not `np.int64(3)`."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def check_holdout_classes(target: str, y_train: pd.Series, y_test: pd.Series) -> None:
    """Refuse a split whose holdout holds classes the training rows lack: a model cannot
    predict a class it never saw, and its metrics on that class are undefined."""
    unseen = sorted(set(y_test.dropna()) - set(y_train.dropna()), key=str)
    if not unseen:
        return
    counts = pd.concat([y_train, y_test]).value_counts()
    shown = ", ".join(f"{_plain(value)!r} ({_rows(int(counts[value]))})" for value in unseen[:5])
    more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
    raise DataError(
        f"target {target!r}: class{'es' * (len(unseen) > 1)} {shown}{more} only in the holdout, never in "
        "the training rows: drop or merge classes with fewer than 2 rows"
    )


# Not cached by inputs: the digest, not the path, says whether the data changed.
@task(name="load_data", **IO_TASK)
def load_data(spec: PipelineSpec, data_path: str | None = None) -> Dataset:
    """Read the spec's data (or an override path) and take its content digest."""
    pattern = spec.resolve_path(data_path or spec.data.path)
    return load_dataset(pattern, spec.data.max_file_mb, expected_columns=contract_columns(spec.contract_path))


@task(name="split_data", cache_policy=NO_CACHE)  # hashing a large frame costs more than splitting
def split_data(spec: PipelineSpec, frame: pd.DataFrame) -> Split:
    return split_frame(spec, frame)
