"""Arrow I/O for scoring: an input file's schema, its rows in fixed-size chunks, and the output file.

Memory is bounded by the chunk size whatever the input size: the input is read chunk by chunk
(Parquet through `ParquetFile.iter_batches`, CSV through `pyarrow.csv.open_csv`), and the output
is written chunk by chunk (`ParquetWriter`, `CSVWriter`) under a temporary name, moved into place
by `commit()`.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from conveyor import predictions
from conveyor.errors import DataError
from tasks.data import display_path
from tasks.scoring.model import ServingModel

_CSV_BLOCK_BYTES = 16 << 20
_PARQUET_BUFFER = 8 << 20
_PARQUET = {".parquet", ".pq"}
_COMPRESSED = {".gz", ".bz2", ".zst", ".lz4"}


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


def read_ahead(chunks: Iterator[pa.Table], executor: ThreadPoolExecutor) -> Generator[pa.Table]:
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
