"""Batch scoring: the serving contract first, then the input streamed through the model in chunks.

Memory is bounded by the chunk size whatever the input size: the input is read chunk by chunk
(Parquet through `ParquetFile.iter_batches`, CSV through `pyarrow.csv.open_csv`), and the
output and the prediction log are written chunk by chunk (`ParquetWriter`, `CSVWriter`).

How a large input is validated (GX on 10M rows at once would need the whole frame in memory):
- the column set is checked from the file's schema before any row is read, strict about
  missing and extra columns (the pyfunc signature check ignores extras);
- Great Expectations runs the whole serving contract on the first `GX_SAMPLE_ROWS` rows
  (types, nulls, ranges, categories), with its full report on a refusal;
- every chunk then passes cheap Arrow checks of the contract's fail-level null, range and
  category expectations, and of infinite values. A file has one schema, so types cannot change
  between chunks. Expectations only GX can evaluate (custom types, row conditions) see the sample.
Outputs are written under temporary names and moved into place at the end, so an input refused
at chunk 40 leaves no output file and nothing in the prediction log.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from conveyor import predictions, registry
from conveyor.errors import DataError, RegistryError
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.contracts import (
    BETWEEN,
    COLUMN_SET,
    FAIL,
    IN_SET,
    NOT_NULL,
    ValidationReport,
    apply_overrides,
    check,
    load_contract,
    serving_contract,
    validate_frame,
)
from tasks.data import display_path

DEFAULT_CHUNK_ROWS = 250_000
GX_SAMPLE_ROWS = 50_000
ROW = "row"  # the id column when the spec names none: the row's position in the input
MODEL_VERSION = "model_version"
PREDICTION = predictions.PREDICTION
SCORED_AT = predictions.SCORED_AT
_CSV_BLOCK_BYTES = 16 << 20
_PARQUET_BUFFER = 8 << 20
_PENDING_WRITES = 2
_MIN_SPLIT_ROWS = 10_000
_PARQUET = {".parquet", ".pq"}
_COMPRESSED = {".gz", ".bz2", ".zst", ".lz4"}


# --- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingModel:
    """One registered version, resolved once per run, with what scoring needs to know about it."""

    name: str
    version: str
    alias: str | None  # "champion" when resolved through the alias, None for a named version
    task: str
    features: tuple[str, ...]  # the model's input columns (its signature)
    categorical: tuple[str, ...]
    classes: tuple[Any, ...]
    model: Any = field(repr=False, compare=False)

    @property
    def output_columns(self) -> tuple[str, ...]:
        probabilities = tuple(f"proba_{c}" for c in self.classes)
        return (PREDICTION, *probabilities, MODEL_VERSION, SCORED_AT)


def _columns_artifact(run_id: str) -> dict[str, list[str]]:
    """The numeric/categorical roles training recorded (`conveyor/columns.json`), {} if absent."""
    try:
        return dict(json.loads(registry.artifact_text(run_id, "conveyor/columns.json")))
    except Exception:  # a version logged without it: CSV columns keep their inferred types
        return {}


def load_serving_model(name: str, version: str | None = None) -> ServingModel:
    """The champion (or the named version), loaded after its artifact digest is checked."""
    from sklearn.base import is_classifier

    alias = None
    if version is None:
        found = registry.alias_version(name, registry.CHAMPION)
        if found is None:
            if not registry.list_versions(name):
                raise RegistryError(f"no registered model named {name!r}: train it first (conveyor train {name})")
            raise RegistryError(f"model {name!r} has no champion yet: promote a version, or pass --version")
        alias = registry.CHAMPION
    else:
        found = registry.get_version(name, version)
    resolved = str(found.version)
    model = registry.load_model(name, resolved)
    classifier = is_classifier(model)
    task_type = found.tags.get("conveyor.task") or ("binary" if classifier else "regression")
    features = tuple(str(c) for c in getattr(model, "feature_names_in_", ()))
    if not features:
        raise RegistryError(f"model {name} version {resolved} does not record its input columns")
    roles = _columns_artifact(found.run_id)
    return ServingModel(
        name=name,
        version=resolved,
        alias=alias,
        task=task_type,
        features=features,
        categorical=tuple(roles.get("categorical", ())),
        classes=tuple(model.classes_) if classifier else (),
        model=model,
    )


# --- the input ------------------------------------------------------------------------------


def _format(path: str, role: str) -> str:
    suffixes = [s.lower() for s in Path(path).suffixes]
    if role == "input":
        while suffixes and suffixes[-1] in _COMPRESSED:
            suffixes.pop()
    last = suffixes[-1] if suffixes else ""
    if last in _PARQUET:
        return "parquet"
    if last == ".csv":
        return "csv"
    shown = last or "(no extension)"
    raise DataError(f"{display_path(path)}: unsupported {role} format {shown!r}: use .csv or .parquet")


@dataclass(frozen=True)
class ScoringInput:
    """An input file: its format, columns, and the Arrow types forced on CSV columns."""

    path: str
    format: str
    columns: tuple[str, ...]
    column_types: dict[str, pa.DataType] = field(default_factory=dict)
    rows: int | None = None  # known up front for Parquet only

    @property
    def shown(self) -> str:
        return display_path(self.path)


def _csv_reader(path: str, column_types: dict[str, pa.DataType] | None = None) -> pacsv.CSVStreamingReader:
    fs, local = predictions.filesystem(path)
    stream = fs.open_input_stream(local, compression="detect")
    convert = pacsv.ConvertOptions(column_types=column_types or {})
    return pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES), convert_options=convert)


def open_input(path: str, model: ServingModel) -> ScoringInput:
    """Look at an input file's schema (reading no more than the first CSV block).

    CSV types are inferred from the first block and then fixed, so a column that looks
    integral (or empty) there but holds decimals further down would fail mid-file: numeric
    features are read as float64 and categorical ones as text, as the model saw them.
    """
    kind = _format(path, "input")
    fs, local = predictions.filesystem(path)
    info = fs.get_file_info(local)
    if info.type != pafs.FileType.File:
        raise DataError(f"{display_path(path)}: no such file")
    try:
        if kind == "parquet":
            with fs.open_input_file(local) as handle:
                parquet = pq.ParquetFile(handle)
                names, rows = tuple(parquet.schema_arrow.names), parquet.metadata.num_rows
            return ScoringInput(path, kind, names, rows=rows)
        reader = _csv_reader(path)
        schema = reader.schema
        reader.close()
    except (pa.ArrowInvalid, OSError) as exc:
        what = "Parquet" if kind == "parquet" else "CSV"
        raise DataError(f"{display_path(path)}: cannot be read as {what}: {str(exc).splitlines()[0]}") from None
    types: dict[str, pa.DataType] = {}
    for name in schema.names:
        inferred = schema.field(name).type
        if name in model.categorical:
            types[name] = pa.string()
        elif name in model.features and (pa.types.is_integer(inferred) or pa.types.is_null(inferred)):
            types[name] = pa.float64()
    return ScoringInput(path, kind, tuple(schema.names), types)


def _rebatch(batches: Iterable[pa.RecordBatch], rows: int, schema: pa.Schema) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows (the last one shorter), whatever sizes the reader yields."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending, schema)


def _read_ahead(chunks: Iterator[pa.Table], executor: ThreadPoolExecutor) -> Generator[pa.Table]:
    """The same chunks, the next one read on `executor` while the caller works on this one."""
    try:
        upcoming = executor.submit(next, chunks, None)
        while (chunk := upcoming.result()) is not None:
            upcoming = executor.submit(next, chunks, None)
            yield chunk
    finally:
        executor.shutdown(wait=True, cancel_futures=True)  # before closing the reader's file
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def read_chunks(source: ScoringInput, chunk_rows: int) -> Iterator[pa.Table]:
    """The input as tables of `chunk_rows` rows, read lazily; unreadable rows are a DataError.

    Parquet is read without pre-buffering: pyarrow's read cache otherwise keeps every row group
    it has read until the file is closed (memory grew ~12 MB per 250k-row chunk), and a file
    written as one huge row group would be read whole. Buffered page reads stay bounded.
    """
    fs, local = predictions.filesystem(source.path)
    done = 0
    try:
        if source.format == "parquet":
            with fs.open_input_file(local) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=_PARQUET_BUFFER)
                batches = parquet.iter_batches(batch_size=chunk_rows)
                for table in _rebatch(batches, chunk_rows, parquet.schema_arrow):
                    yield table
                    done += table.num_rows
        else:
            reader = _csv_reader(source.path, source.column_types)
            try:
                for table in _rebatch(reader, chunk_rows, reader.schema):
                    yield table
                    done += table.num_rows
            finally:
                reader.close()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{source.shown}: cannot read the rows after row {done}: {str(exc).splitlines()[0]}") from None


# --- the serving contract -------------------------------------------------------------------


def serving_suite(spec: PipelineSpec) -> dict[str, Any] | None:
    """The spec's contract without the target (None when the spec has no contract file yet)."""
    path = spec.contract_path
    if not path.exists():
        return None
    suite = apply_overrides(load_contract(path), spec.contract.expectations)
    return serving_contract(suite, spec.data.target)


def _names(columns: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def expected_columns(
    spec: PipelineSpec, model: ServingModel, suite: dict[str, Any] | None
) -> tuple[list[str], list[str], str]:
    """(required, optional, what they come from) for an input to score."""
    for expectation in (suite or {}).get("expectations", []):
        if expectation.get("type") == COLUMN_SET:
            required = [str(c) for c in expectation.get("kwargs", {}).get("column_set", [])]
            return required, [], f"the serving contract {display_path(str(spec.contract_path))}"
    required = [*([spec.data.id_column] if spec.data.id_column else []), *model.features]
    optional = [
        *spec.data.drop,
        *([spec.data.split.time_column] if spec.data.split.time_column else []),
    ]
    return (
        required,
        optional,
        f"model {model.name} v{model.version}'s input columns (no contract file)",
    )


def check_columns(source: ScoringInput, spec: PipelineSpec, model: ServingModel, suite: dict[str, Any] | None) -> None:
    """Refuse an input with a missing or an extra column, naming it."""
    columns = list(source.columns)
    required, optional, described = expected_columns(spec, model, suite)
    missing = [c for c in required if c not in columns]
    missing += [c for c in model.features if c not in columns and c not in missing]
    extra = [c for c in columns if c not in required and c not in optional]
    if len(missing) == 1 and len(extra) == 1:
        raise DataError(
            f"{source.shown}: column {missing[0]!r} is missing and column {extra[0]!r} is not in {described} (renamed?)"
        )
    problems = []
    if missing:
        problems.append(f"column{'s' * (len(missing) > 1)} {_names(missing)} missing")
    if extra:
        problems.append(f"unexpected column{'s' * (len(extra) > 1)} {_names(extra)}")
    if problems:
        raise DataError(f"{source.shown}: {'; '.join(problems)} (the input must hold exactly {described})")
    outputs = set(model.output_columns) | ({ROW} if not spec.data.id_column else set())
    clashes = [c for c in columns if c in outputs]
    if clashes:
        raise DataError(f"{source.shown}: column {clashes[0]!r} clashes with an output column of that name")


@dataclass
class _Check:
    kind: str
    column: str
    kwargs: dict[str, Any]
    mostly: float | None
    unexpected: int = 0
    seen: int = 0


class ChunkChecks:
    """The serving contract's fail-level null, range and category checks, per chunk, in Arrow.

    A strict check refuses the input at the first chunk that breaks it; one with `mostly` sums
    its counts over the whole input and is judged in `finish()`.
    """

    def __init__(self, suite: dict[str, Any] | None, source: str, float_features: Iterable[str] = ()) -> None:
        self.source = source
        self.float_features = tuple(float_features)
        self.checks: list[_Check] = []
        for expectation in (suite or {}).get("expectations", []):
            kind, kwargs = expectation.get("type"), dict(expectation.get("kwargs", {}))
            on_violation = expectation.get("meta", {}).get("on_violation", FAIL)
            if kind not in {NOT_NULL, BETWEEN, IN_SET} or on_violation != FAIL or kwargs.get("row_condition"):
                continue
            self.checks.append(_Check(kind, str(kwargs["column"]), kwargs, kwargs.get("mostly")))

    def _unexpected(self, rule: _Check, column: pa.ChunkedArray) -> pa.ChunkedArray | None:
        """A boolean mask of the values that break the check (None when it cannot run in Arrow)."""
        if rule.kind == NOT_NULL:
            return pc.is_null(column, nan_is_null=True)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if rule.kind == BETWEEN:
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                return None
            low, high = rule.kwargs.get("min_value"), rule.kwargs.get("max_value")
            masks = []
            if low is not None:
                below = pc.less_equal if rule.kwargs.get("strict_min") else pc.less
                masks.append(below(column, low))
            if high is not None:
                above = pc.greater_equal if rule.kwargs.get("strict_max") else pc.greater
                masks.append(above(column, high))
            if not masks:
                return None
            return masks[0] if len(masks) == 1 else pc.or_(masks[0], masks[1])
        try:
            allowed = pa.array(rule.kwargs.get("value_set", [])).cast(column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None  # a type the sample's GX type check refused already
        return pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, value_set=allowed)))

    def _describe(self, rule: _Check, count: int, examples: list[Any]) -> str:
        shown = ", ".join(
            repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v) for v in examples
        )
        eg = f" (e.g. {shown})" if shown else ""
        if rule.kind == NOT_NULL:
            return f"{count} missing value{'s' * (count != 1)}"
        if rule.kind == BETWEEN:
            low, high = rule.kwargs.get("min_value"), rule.kwargs.get("max_value")
            floor = "-inf" if low is None else f"{low:g}"
            ceiling = "inf" if high is None else f"{high:g}"
            return f"{count} value{'s' * (count != 1)} outside [{floor}, {ceiling}]{eg}"
        return f"{count} value{'s' * (count != 1)} not in the contract's categories{eg}"

    def __call__(self, chunk: pa.Table, offset: int) -> None:
        """Refuse the chunk (rows offset.. of the input) when a strict check fails."""
        where = f"in rows {offset}-{offset + chunk.num_rows - 1}"
        for name in self.float_features:
            column = chunk[name]
            if pa.types.is_floating(column.type):
                infinite = int(pc.sum(pc.is_inf(column)).as_py() or 0)
                if infinite:
                    raise DataError(
                        f"{self.source}: column {name!r}: {infinite} infinite values {where}: models cannot use them"
                    )
        for rule in self.checks:
            if rule.column not in chunk.column_names:
                continue
            column = chunk[rule.column]
            mask = self._unexpected(rule, column)
            if mask is None:
                continue
            count = int(pc.sum(mask).as_py() or 0)
            rule.unexpected += count
            rule.seen += chunk.num_rows if rule.kind == NOT_NULL else chunk.num_rows - column.null_count
            if count and rule.mostly is None:
                examples = [] if rule.kind == NOT_NULL else column.filter(mask).slice(0, 3).to_pylist()
                problem = self._describe(rule, count, examples)
                raise DataError(
                    f"{self.source}: column {rule.column!r}: {problem} {where}; the serving contract refuses them"
                )

    def finish(self) -> None:
        """Judge the checks that allow a share of unexpected values, over the whole input."""
        for rule in self.checks:
            if rule.mostly is None or rule.seen == 0:
                continue
            share = rule.unexpected / rule.seen
            if share > 1 - rule.mostly + 1e-12:
                problem = self._describe(rule, rule.unexpected, [])
                allowed = 100 * (1 - rule.mostly)
                raise DataError(
                    f"{self.source}: column {rule.column!r}: {problem} ({100 * share:.1f}%), "
                    f"the contract allows at most {allowed:.1f}%"
                )


def check_input(
    spec: PipelineSpec, model: ServingModel, source: ScoringInput, suite: dict[str, Any] | None
) -> ValidationReport | None:
    """Columns from the schema, then GX on the first rows (None when there is no contract)."""
    check_columns(source, spec, model, suite)
    if suite is None:
        return None
    sample = next(read_chunks(source, GX_SAMPLE_ROWS), None)
    if sample is None:
        raise DataError(f"{source.shown}: a header but no data rows")
    report = validate_frame(sample.to_pandas(), suite, spec, source.path)
    report.contract_path = display_path(str(spec.contract_path))
    check(report)
    return report


# --- scoring --------------------------------------------------------------------------------


def predict_chunk(model: ServingModel, frame: Any) -> dict[str, pa.Array]:
    """`prediction`, and `proba_<class>` for classifiers, from one pass over the rows.

    A classifier's prediction is the class of highest probability (what `predict` returns),
    taken from the same `predict_proba` pass instead of a second one.
    """
    if not model.classes:
        return {PREDICTION: pa.array(np.asarray(model.model.predict(frame), dtype="float64"))}
    proba = np.asarray(model.model.predict_proba(frame), dtype="float64")
    outputs = {PREDICTION: pa.array(list(model.classes)).take(pa.array(proba.argmax(axis=1)))}
    for index, label in enumerate(model.classes):
        outputs[f"proba_{label}"] = pa.array(np.ascontiguousarray(proba[:, index]))
    return outputs


def score_chunk(
    model: ServingModel, chunk: pa.Table, offset: int, id_column: str | None, scored_at: datetime
) -> tuple[pa.Table, pa.Table]:
    """(output rows, prediction log rows) for one chunk starting at row `offset` of the input."""
    rows = chunk.num_rows
    outputs = predict_chunk(model, chunk.select(list(model.features)).to_pandas())
    if id_column:
        ids = {id_column: chunk[id_column]}
    else:
        ids = {ROW: pa.array(np.arange(offset, offset + rows, dtype="int64"))}
    stamps = {
        MODEL_VERSION: pa.repeat(pa.scalar(model.version, pa.string()), rows),
        SCORED_AT: pa.repeat(pa.scalar(scored_at, predictions.TIME_TYPE), rows),
    }
    output = pa.table({**ids, **outputs, **stamps})
    log = pa.table({**ids, **{name: chunk[name] for name in model.features}, **outputs, **stamps})
    return output, log


def scoring_threads() -> int:
    """Chunks scored at once: the cores this process may use, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


def _one_native_thread() -> None:
    """Scoring threads run the model's OpenMP code single-threaded: the chunks are the parallelism.

    OpenMP's thread count is a per-thread setting, so the rest of the process keeps its own.
    sklearn's OpenMP loops synchronise once per tree: on a busy machine a thread that is not
    scheduled in time stalls every tree of every chunk (measured: up to 40% slower).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="openmp")


class OutputWriter:
    """The output file, CSV or Parquet by extension, written chunk by chunk under a temporary
    name and moved into place by `commit()`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.format = _format(path, "output")
        self.fs, self.local = predictions.filesystem(path)
        parent = str(Path(self.local).parent)
        self.fs.create_dir(parent, recursive=True)
        self.temporary = f"{parent}/.{Path(self.local).name}.{uuid.uuid4().hex[:12]}.tmp"
        self._writer: Any = None
        self._sink: Any = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            if self.format == "parquet":
                self._writer = pq.ParquetWriter(
                    self.temporary,
                    table.schema,
                    filesystem=self.fs,
                    **predictions.parquet_options(table.schema),
                )
            else:
                self._sink = self.fs.open_output_stream(self.temporary)
                self._writer = pacsv.CSVWriter(self._sink, table.schema)
        self._writer.write_table(table)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None:
            self._sink.close()
        self._writer = self._sink = None

    def commit(self) -> None:
        self._close()
        self.fs.move(self.temporary, self.local)

    def abort(self) -> None:
        try:
            self._close()
        finally:
            if self.fs.get_file_info(self.temporary).type != pafs.FileType.NotFound:
                self.fs.delete_file(self.temporary)


@dataclass(frozen=True)
class ScoringSummary:
    model: str
    version: str
    alias: str | None
    input: str
    output: str
    rows: int
    chunks: int
    seconds: float
    rows_per_second: float
    log: str
    log_files: list[str]
    started_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_file(
    spec: PipelineSpec,
    model: ServingModel,
    source: ScoringInput,
    output_path: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    suite: dict[str, Any] | None = None,
    log_uri: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
) -> ScoringSummary:
    """Score the input chunk by chunk into the output file and the prediction log.

    Both are committed only when every chunk passed the contract and was scored.
    `progress(chunks, rows)` is called after each chunk; `threads` chunks are scored at once
    (default: the available cores, at most 4).
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    threads = threads or scoring_threads()
    if source.rows:  # a small input still gives every thread a chunk (tiny ones stay whole)
        chunk_rows = min(chunk_rows, max(_MIN_SPLIT_ROWS, -(-source.rows // threads)))
    started = datetime.now(UTC)
    clock = time.perf_counter()
    log_uri = log_uri or predictions.prediction_log_uri(spec.name)
    floats = [name for name in model.features if name not in model.categorical]
    checks = ChunkChecks(suite, source.shown, floats)
    output = OutputWriter(output_path)
    log = predictions.DatasetWriter(log_uri, SCORED_AT)
    rows = chunks = 0
    # Three stages on their own threads: read the next chunk, score `threads` chunks at once,
    # write finished ones in input order. Arrow and the model's native code release the GIL.
    # At most 1 + (threads + 1) + _PENDING_WRITES chunks are held: memory stays bounded.
    reader = ThreadPoolExecutor(1, "score-read")
    scorer = ThreadPoolExecutor(threads, "score", initializer=_one_native_thread)
    writer = ThreadPoolExecutor(1, "score-write")
    scoring: deque[Future[tuple[pa.Table, pa.Table, str]]] = deque()
    writing: deque[Future[None]] = deque()

    def score(chunk: pa.Table, offset: int) -> tuple[pa.Table, pa.Table, str]:
        scored_at = datetime.now(UTC)
        scored, logged = score_chunk(model, chunk, offset, spec.data.id_column, scored_at)
        return scored, logged, scored_at.date().isoformat()

    def write(job: tuple[pa.Table, pa.Table, str]) -> None:
        scored, logged, day = job
        output.write(scored)
        log.write(logged, day=day)

    def hand_over(keep: int) -> None:
        """Pass finished chunks to the writer, oldest first, until `keep` are left scoring."""
        while len(scoring) > keep:
            writing.append(writer.submit(write, scoring.popleft().result()))
            while len(writing) > _PENDING_WRITES:
                writing.popleft().result()

    stream = _read_ahead(read_chunks(source, chunk_rows), reader)
    try:
        for chunk in stream:
            checks(chunk, rows)
            scoring.append(scorer.submit(score, chunk, rows))
            rows += chunk.num_rows
            chunks += 1
            hand_over(keep=threads)
            if progress is not None:
                progress(chunks, rows)
        hand_over(keep=0)
        while writing:
            writing.popleft().result()
        checks.finish()
        if rows == 0:
            raise DataError(f"{source.shown}: a header but no data rows")
        log_files = log.commit()  # the log first: an output never exists without its log
        output.commit()
    except BaseException:
        for executor in (scorer, writer):  # nothing may still write when the files go
            executor.shutdown(wait=True, cancel_futures=True)
        output.abort()
        log.abort()
        raise
    finally:
        stream.close()
        for executor in (reader, scorer, writer):
            executor.shutdown(wait=True)
    seconds = time.perf_counter() - clock
    return ScoringSummary(
        model=model.name,
        version=model.version,
        alias=model.alias,
        input=source.path,
        output=output_path,
        rows=rows,
        chunks=chunks,
        seconds=round(seconds, 3),
        rows_per_second=round(rows / seconds, 1) if seconds > 0 else float("inf"),
        log=log_uri,
        log_files=log_files,
        started_at=started.isoformat(),
    )


# --- Prefect tasks --------------------------------------------------------------------------


@task(name="resolve_model", **IO_TASK)
def resolve_model(name: str, version: str | None = None) -> ServingModel:
    """Resolve the champion (or the named version) once for the whole run, and load it."""
    model = load_serving_model(name, version)
    get_run_logger().info("scoring with %s v%s%s", name, model.version, f" ({model.alias})" if model.alias else "")
    return model


@dataclass(frozen=True)
class CheckedInput:
    source: ScoringInput
    suite: dict[str, Any] | None
    message: str


@task(name="validate_input", cache_policy=NO_CACHE)
def validate_input(spec: PipelineSpec, model: ServingModel, input_path: str) -> CheckedInput:
    """The serving contract: exact columns, then GX on the first rows; raise DataError if broken."""
    source = open_input(input_path, model)
    suite = serving_suite(spec)
    report = check_input(spec, model, source, suite)
    if report is None:
        message = f"{source.shown}: columns match model v{model.version}'s inputs (no contract)"
        get_run_logger().warning("%s has no contract: checked the input's columns only", spec.name)
    else:
        message = f"{report.message()} (first {report.rows} rows with GX; every chunk with Arrow checks)"
        for item in report.warnings:
            get_run_logger().warning("serving contract warning: %s", item.text(report.source))
    return CheckedInput(source, suite, message)


@task(name="score_batch", cache_policy=NO_CACHE)
def score_batch(
    spec: PipelineSpec,
    model: ServingModel,
    checked: CheckedInput,
    output_path: str,
    chunk_rows: int,
) -> ScoringSummary:
    """Stream the whole input through the model in one task (a task per chunk costs too much)."""
    logger = get_run_logger()

    def progress(chunks: int, rows: int) -> None:
        if chunks % 20 == 0:
            logger.info("%d rows scored", rows)

    return score_file(spec, model, checked.source, output_path, chunk_rows, checked.suite, progress=progress)


@task(name="record_labels", **IO_TASK)
def record_labels(spec: PipelineSpec, labels_path: str) -> predictions.FeedbackResult:
    """Store late ground truth by id in the model's feedback dataset."""
    return predictions.record_feedback(
        spec.name,
        labels_path,
        id_column=spec.data.id_column,
        target=spec.data.target,
        source=spec.source,
    )
