"""Every answered row into the model's prediction log, written in batches off the request path.

A request only appends its rows (an Arrow table) to a queue; a thread writes what has gathered
every `flush_seconds` (or sooner past `max_rows`) through `conveyor.predictions.append`: the same
day-partitioned Parquet dataset and columns as batch scoring, one file per model per flush, so
`conveyor feedback` and monitoring read online traffic as they read batch runs. Two columns are
added: `route` (champion, canary or shadow) and `shadow` (true for rows no client saw).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from conveyor import predictions
from tasks.scoring.model import MODEL_VERSION, ROW, SCORED_AT

log = logging.getLogger("conveyor.serving")

ROUTE = "route"
SHADOW = "shadow"


def log_rows(
    table: pa.Table,
    features: tuple[str, ...],
    id_column: str | None,
    outputs: dict[str, pa.Array],
    version: str,
    scored_at: datetime,
    route: str,
) -> pa.Table:
    """The prediction log's columns for one request, in batch scoring's order."""
    rows = table.num_rows
    if id_column and id_column in table.column_names:
        ids: dict[str, Any] = {id_column: table[id_column]}
    else:
        ids = {ROW: pa.array(np.arange(rows, dtype="int64"))}
    return pa.table(
        {
            **ids,
            **{name: table[name] for name in features},
            **outputs,
            MODEL_VERSION: pa.repeat(pa.scalar(version, pa.string()), rows),
            SCORED_AT: pa.repeat(pa.scalar(scored_at, predictions.TIME_TYPE), rows),
            ROUTE: pa.repeat(pa.scalar(route, pa.string()), rows),
            SHADOW: pa.repeat(pa.scalar(route == "shadow", pa.bool_()), rows),
        }
    )


class PredictionLog:
    """A queue of logged rows per model and the thread that writes them."""

    def __init__(self, flush_seconds: float = 2.0, max_rows: int = 50_000) -> None:
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self._pending: list[tuple[str, pa.Table]] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.failed = 0

    def add(self, model: str, table: pa.Table) -> None:
        with self._lock:
            self._pending.append((model, table))
            self._rows += table.num_rows
            full = self._rows >= self.max_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write everything queued; returns the rows written."""
        with self._lock:
            pending, self._pending, self._rows = self._pending, [], 0
        groups: dict[tuple[str, pa.Schema], list[pa.Table]] = defaultdict(list)
        for model, table in pending:
            groups[(model, table.schema)].append(table)
        written = 0
        for (model, _), tables in groups.items():
            rows = sum(t.num_rows for t in tables)
            try:
                # One chunk per column: the day split and the Parquet writer pay per chunk (one per request).
                predictions.append(model, pa.concat_tables(tables).combine_chunks())
                written += rows
            except Exception as exc:  # a full or unreachable store: count the loss, keep serving
                self.failed += rows
                log.error("prediction log of %s: %d rows not written: %s", model, rows, exc)
        self.written += written
        return written

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="serve-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.flush()
