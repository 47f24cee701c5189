"""The models a server answers with: loaded lazily, bounded in memory, following their aliases.

- A model's champion is loaded on its first request (and preloaded at start while the cache
  bound allows); least recently used models are unloaded when the loaded ones exceed the bound.
- A poller asks the registry for every model's aliases each `poll_seconds` (one call for the
  whole fleet). When `champion` (or `challenger`, for models with a canary or shadow) points
  elsewhere, the new version is loaded on a background thread and swapped in with one
  assignment: a request holds the `Slot` it started with, so in-flight requests finish on the
  old version and no request waits for or fails on a switch.
- A version is loaded the way batch scoring loads it (`tasks.scoring.load_serving_model`): its
  artifact digest checked, deserialised with skops and a fixed type allowlist; a champion moved
  outside Conveyor (no audit entry) is refused as batch scoring refuses it, and the old version
  keeps serving. `Loaded.predict` is the one place that knows how a model answers: a model that
  routes rows itself (segment models) plugs in there with its own loader.
- The pipeline spec (contract, `serving.canary`, `serving.shadow`) is read at load time and read
  again when its file changes.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from app.serving.payload import Contract, RequestError
from conveyor import registry
from conveyor.errors import ConveyorError
from conveyor.spec import PipelineSpec, find_spec
from tasks.scoring import ServingModel, load_serving_model, serving_suite
from tasks.scoring.executor import predict_chunk

log = logging.getLogger("conveyor.serving")

CHAMPION, CHALLENGER = registry.CHAMPION, registry.CHALLENGER


@dataclass(frozen=True)
class Loaded:
    """One loaded version of a model and the contract its requests must meet."""

    name: str
    version: str
    role: str  # champion or challenger
    contract: Contract
    loaded_at: float
    size_mb: float
    spec_mtime: float

    @property
    def model(self) -> ServingModel:
        return self.contract.model

    @property
    def spec(self) -> PipelineSpec:
        return self.contract.spec

    def predict(self, frame: Any) -> dict[str, pa.Array]:
        """`prediction` and, for classifiers, `proba_<class>` (batch scoring's own function)."""
        return predict_chunk(self.model, frame)


@dataclass(frozen=True)
class Slot:
    """What answers a model's requests: its champion and, with a canary or shadow, its challenger."""

    champion: Loaded
    challenger: Loaded | None = None

    @property
    def canary(self) -> float:
        return self.champion.spec.serving.canary if self.challenger else 0.0

    @property
    def shadow(self) -> bool:
        return self.challenger is not None and self.champion.spec.serving.shadow

    @property
    def size_mb(self) -> float:
        return self.champion.size_mb + (self.challenger.size_mb if self.challenger else 0.0)


def _spec_file(spec: PipelineSpec) -> Path | None:
    return Path(spec.source) if spec.source else None


def _mtime(spec: PipelineSpec) -> float:
    path = _spec_file(spec)
    try:
        return path.stat().st_mtime if path else 0.0
    except OSError:
        return 0.0


def _size_mb(model: Any) -> float:
    """About what the model holds in memory: its pickled size (taken once, at load)."""
    try:
        return len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)) / 2**20
    except Exception:  # an object pickle cannot take: count it as small rather than refuse it
        return 1.0


def load_version(name: str, role: str, version: str | None = None) -> Loaded:
    """Load the champion (version None) or a named version, with its spec's contract."""
    spec = find_spec(name)
    model = load_serving_model(name, version)
    contract = Contract(spec, model, serving_suite(spec))
    return Loaded(name, model.version, role, contract, time.time(), _size_mb(model.model), _mtime(spec))


@dataclass
class ModelState:
    """What the server knows of one model: the registry's aliases and its last load error."""

    aliases: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # role -> version that failed to load
    loading: set[str] = field(default_factory=set)


class Fleet:
    """Every served model: its state, the loaded slots (an LRU cache) and the alias poller."""

    def __init__(
        self,
        names: list[str] | None = None,
        cache_mb: float = 2048,
        poll_seconds: float = 1.0,
        loader: Callable[[str, str, str | None], Loaded] = load_version,
    ) -> None:
        self.only = list(names) if names else None
        self.cache_mb = cache_mb
        self.poll_seconds = poll_seconds
        self.loader = loader
        self.slots: dict[str, Slot] = {}
        self.states: dict[str, ModelState] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._background = ThreadPoolExecutor(2, "serve-load")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.preloaded = threading.Event()
        self.switches = 0

    # --- the request path ---------------------------------------------------------------------

    def get(self, name: str) -> Slot | None:
        """The loaded slot (marking it recently used), or None when it must be loaded first."""
        slot = self.slots.get(name)
        if slot is not None:
            with self._lock:
                if name in self._recent:
                    self._recent.move_to_end(name)
        return slot

    def ensure(self, name: str) -> Slot:
        """The slot, loading the champion now if needed; RequestError 404/503 when it cannot be."""
        slot = self.slots.get(name)
        if slot is not None:
            return slot
        state = self.states.get(name)
        if state is None or (self.only is not None and name not in self.only):
            raise RequestError(404, f"no model named {name!r} is served here (GET /models lists them)")
        if CHAMPION not in state.aliases:
            raise RequestError(404, f"model {name!r} has no champion to serve yet")
        with self._load_lock(name):
            slot = self.slots.get(name)
            if slot is not None:
                return slot
            try:
                champion = self.loader(name, CHAMPION, None)
            except ConveyorError as exc:
                state.error = str(exc)
                raise RequestError(503, f"model {name!r} cannot be served: {exc}") from None
            slot = Slot(champion, self._challenger_for(champion, state))
            self._install(name, slot)
            return slot

    # --- loading and swapping -------------------------------------------------------------------

    def _load_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._load_locks.setdefault(name, threading.Lock())

    def _challenger_for(self, champion: Loaded, state: ModelState) -> Loaded | None:
        serving = champion.spec.serving
        version = state.aliases.get(CHALLENGER)
        if not (serving.canary > 0 or serving.shadow) or version is None or version == champion.version:
            return None
        current = self.slots.get(champion.name)
        if current and current.challenger and current.challenger.version == version:
            return current.challenger
        try:
            return self.loader(champion.name, CHALLENGER, version)
        except ConveyorError as exc:
            state.failed[CHALLENGER] = version
            log.warning("challenger v%s of %s not loaded: %s", version, champion.name, exc)
            return None

    def _install(self, name: str, slot: Slot) -> None:
        """Put the slot in place with one assignment, then unload the least recently used beyond the bound."""
        with self._lock:
            previous = self.slots.get(name)
            self.slots[name] = slot
            self._recent[name] = None
            self._recent.move_to_end(name)
            if previous is not None and previous.champion.version != slot.champion.version:
                self.switches += 1
                log.info("%s: serving v%s (was v%s)", name, slot.champion.version, previous.champion.version)
            total = sum(s.size_mb for s in self.slots.values())
            for oldest in list(self._recent):
                if total <= self.cache_mb or oldest == name:
                    break
                evicted = self.slots.pop(oldest, None)
                self._recent.pop(oldest, None)
                if evicted is not None:
                    total -= evicted.size_mb
                    log.info("%s: unloaded (cache bound %.0f MB)", oldest, self.cache_mb)
            state = self.states.setdefault(name, ModelState())
            state.error = None

    def _reload(self, name: str) -> None:
        """Load what the aliases now name and swap it in; on failure the old slot keeps serving."""
        state = self.states[name]
        try:
            with self._load_lock(name):
                slot = self.slots.get(name)
                if slot is None:
                    return  # unloaded meanwhile: the next request loads the current champion
                wanted = state.aliases.get(CHAMPION)
                champion = slot.champion
                if wanted is not None and wanted != champion.version:
                    try:
                        champion = self.loader(name, CHAMPION, None)
                    except ConveyorError as exc:
                        state.error = str(exc)
                        state.failed[CHAMPION] = wanted
                        log.warning("%s: champion v%s not loaded, v%s keeps serving: %s", name, wanted,
                                    slot.champion.version, exc)  # fmt: skip
                        return
                elif _mtime(champion.spec) != champion.spec_mtime:
                    champion = self._reread_spec(champion)
                self._install(name, Slot(champion, self._challenger_for(champion, state)))
        finally:
            state.loading.clear()

    def _reread_spec(self, loaded: Loaded) -> Loaded:
        try:
            spec = find_spec(loaded.name)
        except ConveyorError as exc:
            log.warning("%s: the spec no longer reads (%s); keeping the one loaded", loaded.name, exc)
            return replace(loaded, spec_mtime=_mtime(loaded.spec))
        contract = Contract(spec, loaded.model, serving_suite(spec))
        return replace(loaded, contract=contract, spec_mtime=_mtime(spec))

    def _needs_reload(self, name: str, slot: Slot, state: ModelState) -> bool:
        champion = state.aliases.get(CHAMPION)
        if champion is not None and champion != slot.champion.version and state.failed.get(CHAMPION) != champion:
            return True
        if _mtime(slot.champion.spec) != slot.champion.spec_mtime:
            return True
        serving = slot.champion.spec.serving
        challenger = state.aliases.get(CHALLENGER)
        wants = (serving.canary > 0 or serving.shadow) and challenger not in (None, slot.champion.version)
        have = slot.challenger.version if slot.challenger else None
        return bool(wants and have != challenger and state.failed.get(CHALLENGER) != challenger) or (
            not wants and have is not None
        )

    # --- the poller -----------------------------------------------------------------------------

    def registry_aliases(self) -> dict[str, dict[str, str]]:
        """Every registered model's aliases, in one paged search."""
        mlflow_client = registry.client()
        found: dict[str, dict[str, str]] = {}
        token = None
        while True:
            page = mlflow_client.search_registered_models(max_results=1000, page_token=token)
            for model in page:
                found[model.name] = {str(k): str(v) for k, v in (model.aliases or {}).items()}
            token = page.token
            if not token:
                return found

    def refresh(self) -> None:
        """Poll once: learn the aliases and schedule a background load where they moved."""
        aliases = self.registry_aliases()
        names = self.only if self.only is not None else [n for n, a in aliases.items() if CHAMPION in a]
        for name in names:
            state = self.states.setdefault(name, ModelState())
            state.aliases = aliases.get(name, {})
            if name not in aliases:
                state.error = f"no registered model named {name!r}"
            slot = self.slots.get(name)
            if slot is not None and not state.loading and self._needs_reload(name, slot, state):
                state.loading.add(CHAMPION)
                self._background.submit(self._reload, name)

    def preload(self) -> None:
        """Load every champion while the cache bound allows (the rest load on first request)."""
        try:
            for name, state in list(self.states.items()):
                if self._stop.is_set():
                    return
                if CHAMPION not in state.aliases or name in self.slots:
                    continue
                if sum(s.size_mb for s in self.slots.values()) >= self.cache_mb:
                    return
                try:
                    self.ensure(name)
                except RequestError as exc:
                    log.warning("%s", exc.message)
        finally:
            self.preloaded.set()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as exc:  # the registry is unreachable for a moment: keep serving
                log.warning("registry poll failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def start(self) -> None:
        try:
            self.refresh()
        except Exception as exc:
            log.warning("registry not reachable at start: %s", exc)
        with self._lock:
            if self._stop.is_set():
                return
            self._background.submit(self.preload)
            self._poller = threading.Thread(target=self._poll, name="serve-poll", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=self.poll_seconds + 5)
        self._background.shutdown(wait=True, cancel_futures=True)

    # --- what the server reports ----------------------------------------------------------------

    def ready(self) -> tuple[bool, list[str]]:
        """Preloading done and no served champion failing to load; the names that hold it back."""
        failed = sorted(name for name, state in self.states.items() if state.error and name not in self.slots)
        if not self.preloaded.is_set():
            return False, sorted(n for n, s in self.states.items() if CHAMPION in s.aliases and n not in self.slots)
        return not failed, failed

    def describe(self) -> list[dict[str, Any]]:
        rows = []
        for name in sorted(self.states):
            state, slot = self.states[name], self.slots.get(name)
            row: dict[str, Any] = {
                "name": name,
                "champion": state.aliases.get(CHAMPION),
                "loaded": slot is not None,
                "serving_version": slot.champion.version if slot else None,
                "loaded_at": slot.champion.loaded_at if slot else None,
                "segmented": bool(slot and slot.champion.model.segmented),
                "segments": slot.champion.model.segments if slot else None,
                "size_mb": round(slot.size_mb, 2) if slot else None,
            }
            if slot is not None and slot.challenger is not None:
                row.update(challenger=slot.challenger.version, canary=slot.canary, shadow=slot.shadow)
            if state.error:
                row["error"] = state.error
            rows.append(row)
        return rows
