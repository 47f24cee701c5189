"""The executor: the input streamed through the model in chunks, into the output and the prediction log.

Three stages on their own threads: read the next chunk, score several chunks at once, write the
finished ones in input order. Outputs are written under temporary names and moved into place at
the end, so an input refused at chunk 40 leaves no output file and nothing in the prediction log.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from conveyor import predictions
from conveyor.errors import DataError
from conveyor.spec import PipelineSpec
from tasks.scoring.arrow_io import OutputWriter, ScoringInput, read_ahead, read_chunks
from tasks.scoring.contract import ChunkChecks
from tasks.scoring.model import MODEL_VERSION, PREDICTION, ROW, SCORED_AT, SERVED_BY, ServingModel

DEFAULT_CHUNK_ROWS = 250_000
_PENDING_WRITES = 2
_MIN_SPLIT_ROWS = 10_000


def predict_chunk(model: ServingModel, frame: Any) -> dict[str, pa.Array]:
    """`prediction`, and `proba_<class>` for classifiers, from one pass over the rows.

    A classifier's prediction is the class of highest probability (what `predict` returns),
    taken from the same `predict_proba` pass instead of a second one.
    """
    served = {SERVED_BY: pa.array(model.model.served_by(frame), pa.string())} if model.segmented else {}
    if not model.classes:
        return {PREDICTION: pa.array(np.asarray(model.model.predict(frame), dtype="float64")), **served}
    proba = np.asarray(model.model.predict_proba(frame), dtype="float64")
    outputs = {PREDICTION: pa.array(list(model.classes)).take(pa.array(proba.argmax(axis=1)))}
    for index, label in enumerate(model.classes):
        outputs[f"proba_{label}"] = pa.array(np.ascontiguousarray(proba[:, index]))
    return outputs | served


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

    stream = read_ahead(read_chunks(source, chunk_rows), reader)
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
