"""Dynamic batching: small requests for the same loaded version that arrive together are scored by
one `predict` call.

A scikit-learn pipeline's `predict_proba` costs about the same for one row as for a few dozen (its
per-call overhead dominates), so under concurrent single-row traffic most of a request's time is
that fixed cost. Requests scored on the event loop join the batch of their loaded version; the
batch runs two loop turns after its first request arrived, so that requests already being parsed
join it, and each request gets its own rows' slice of the outputs. Nothing waits on a timer: a
request alone is scored at once. A batch the model refuses is scored request by request, so one
bad request never fails the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from app.serving.fleet import Loaded

Outputs = dict[str, pa.Array]


@dataclass
class _Batch:
    """The requests waiting for one loaded version, and how many rows they hold."""

    loaded: Loaded
    items: list[tuple[pd.DataFrame, asyncio.Future[Outputs]]] = field(default_factory=list)
    rows: int = 0


class Batcher:
    """Per loaded version, the requests waiting to be scored together on this event loop."""

    def __init__(self, max_rows: int = 1024) -> None:
        self.max_rows = max_rows
        self._waiting: dict[int, _Batch] = {}
        self.batches = 0  # scored batches, and the requests in them: what batching saved
        self.requests = 0

    async def predict(self, loaded: Loaded, frame: pd.DataFrame) -> Outputs:
        """The outputs of `loaded.predict(frame)`, computed in a batch with the requests beside it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        key = id(loaded)
        batch = self._waiting.get(key)
        if batch is None or batch.rows + len(frame) > self.max_rows:
            if batch is not None:  # full: score it now, start another
                self._run(key)
            batch = self._waiting[key] = _Batch(loaded)
            # Two turns of the loop: the handlers already scheduled reach this point and join.
            loop.call_soon(loop.call_soon, self._run, key)
        batch.items.append((frame, future))
        batch.rows += len(frame)
        return await future

    def _run(self, key: int) -> None:
        batch = self._waiting.pop(key, None)
        if batch is None:  # already scored (it filled up)
            return
        loaded = batch.loaded
        live = [(frame, future) for frame, future in batch.items if not future.done()]  # a client gone: skip
        if not live:
            return
        self.batches += 1
        self.requests += len(live)
        if len(live) == 1:
            _settle(live[0][1], loaded, live[0][0])
            return
        try:
            outputs = loaded.predict(pd.concat([frame for frame, _ in live], ignore_index=True))
        except Exception:  # a request the model refuses: each request gets its own answer or error
            for frame, future in live:
                _settle(future, loaded, frame)
            return
        offset = 0
        for frame, future in live:
            rows = len(frame)
            future.set_result({name: array.slice(offset, rows) for name, array in outputs.items()})
            offset += rows


def _settle(future: asyncio.Future[Outputs], loaded: Loaded, frame: Any) -> None:
    try:
        future.set_result(loaded.predict(frame))
    except Exception as exc:
        future.set_exception(exc)
