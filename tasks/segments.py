"""Segment models: the spec's rows split by `segments.by`, one registered model per segment, and the
router that serves them as one model (rows routed by segment, the rest to the all-rows model)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conveyor.registry import SEGMENT_OF  # version (and model) tag: the spec a segment model belongs to
from conveyor.spec import PipelineSpec

ALL_ROWS = "all_rows"  # `<name>.all_rows`: trained on every row; serves small and unknown segments
ROUTER_KIND = "segment-router"  # the `conveyor.kind` tag of a router version of `<name>`
ROUTES_FILE = "routes.json"
SEGMENT = "conveyor.segment"  # version tag: `store=3`
SERVED_BY = "served_by"  # the column naming the model version that scored a row

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _slug(text: str) -> str:
    """`text` as a model-name part; a short hash keeps two values apart that slug alike."""
    slug = _UNSAFE.sub("_", text)
    if slug != text or not slug:
        slug = f"{slug}-h{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    return slug


def value_text(value: Any) -> str:
    """A segment value as routing compares it: `3` for 3, 3.0 and "3" alike, so a CSV and a
    Parquet file route the same row the same way."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.generic,)):
        return str(value.item())
    return str(value)


def segment_key(values: Sequence[Any]) -> str:
    return json.dumps([value_text(v) for v in values])


def segment_label(by: Sequence[str], values: Sequence[Any]) -> str:
    """`store=3`, or `region=EU,store=3` for several columns."""
    return ",".join(f"{column}={value_text(value)}" for column, value in zip(by, values, strict=True))


def segment_model_name(name: str, by: Sequence[str], values: Sequence[Any]) -> str:
    """`sales.store-3`: a valid, stable model name per segment (letters, digits, '_', '.', '-')."""
    parts = (f"{_slug(str(column))}-{_slug(value_text(value))}" for column, value in zip(by, values, strict=True))
    return ".".join([name, *parts])


def fallback_model_name(name: str) -> str:
    return f"{name}.{ALL_ROWS}"


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 of a frame's columns, types and row values (in order): a segment's own data digest."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class SegmentJob:
    """One model to train: a segment's rows (or every row, for the all-rows model)."""

    model: str
    label: str  # `store=3`, or `all rows`
    key: str | None  # the routing key; None for the all-rows model
    frame: pd.DataFrame = field(repr=False, compare=False)
    digest: str = ""
    source_rows: int = 0  # the rows it stands for: more than `frame` holds when the frame is a sample


@dataclass(frozen=True)
class SegmentPlan:
    jobs: list[SegmentJob]
    small: dict[str, int]  # label -> rows, for segments under min_rows (served by the all-rows model)


def plan_segments(spec: PipelineSpec, frame: pd.DataFrame) -> SegmentPlan:
    """Split the validated frame by `segments.by` in memory: one job per segment with at least
    `min_rows` rows, plus the all-rows model."""
    assert spec.segments is not None
    by, min_rows = list(spec.segments.by), spec.segments.min_rows
    missing = [column for column in by if column not in frame.columns]
    if missing:
        from conveyor.errors import DataError

        raise DataError(f"segments.by: column(s) {missing} are not in the data (columns: {', '.join(frame.columns)})")
    jobs = [
        SegmentJob(
            fallback_model_name(spec.name),
            "all rows",
            None,
            fallback_sample(frame, spec.segments.fallback_rows, spec.data.split.seed),
            frame_digest(frame),  # every row's: a change anywhere retrains it
            len(frame),
        )
    ]
    small: dict[str, int] = {}
    for values, rows in frame.groupby(by, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        label = segment_label(by, values)
        if len(rows) < min_rows:
            small[label] = len(rows)
            continue
        jobs.append(
            SegmentJob(
                segment_model_name(spec.name, by, values),
                label,
                segment_key(values),
                rows,
                frame_digest(rows),
                len(rows),
            )
        )
    return SegmentPlan(jobs, small)


def fallback_sample(frame: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """The all-rows model's training rows: all of them up to `cap`, else the same `cap` rows every
    time (seeded), in their order. The segment column's one-hot encoding (up to 250 columns) makes
    its fit grow with rows x stores: 33.5 s on 300,000 rows of benchmarks/bench_fleet.py's data at
    150 stores, 11.2 s on 100,000, for a model that serves the small and unknown segments."""
    if len(frame) <= cap:
        return frame
    return frame.sample(n=cap, random_state=seed).sort_index()


def segment_spec(spec: PipelineSpec, job: SegmentJob) -> PipelineSpec:
    """The spec a segment trains with: its own model name; the segment columns left out of its
    features (constant within a segment). The all-rows model keeps them as features."""
    assert spec.segments is not None
    data = spec.data
    if job.key is not None:
        data = data.model_copy(update={"drop": (*data.drop, *spec.segments.by)})
    return spec.model_copy(update={"name": job.model, "data": data})


# --- routing -------------------------------------------------------------------------------------


def route_entry(model: str, version: str, digest: str, label: str, stale: bool = False) -> dict[str, Any]:
    return {"model": model, "version": version, "digest": digest, "label": label, "stale": stale}


def routes_document(
    by: Sequence[str],
    task: str,
    classes: Sequence[Any],
    features: Sequence[str],
    fallback: dict[str, Any],
    segments: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """What a router version pins: segment key -> (model, version, artifact digest), and the fallback."""
    return {
        "by": list(by),
        "task": task,
        "classes": [value.item() if isinstance(value, np.generic) else value for value in classes],
        "features": list(features),
        "fallback": fallback,
        "segments": dict(sorted(segments.items())),
    }


Loader = Callable[[str, str, str], Any]


def load_pinned(model: str, version: str, digest: str) -> Any:
    """A segment model as the router pinned it: digest-checked, skops with the type allowlist."""
    from conveyor import artifacts, registry

    registry.client()  # points MLflow at the configured store
    return artifacts.load_checked(f"models:/{model}/{version}", digest, f"model {model} version {version}")


class SegmentRouter:
    """Scores a mixed frame: each row by its segment's pinned model, unknown and small segments by
    the all-rows model. Models load on first use, so a 1,000-segment router starts at once."""

    def __init__(self, routes: dict[str, Any], load: Loader = load_pinned) -> None:
        self.routes = routes
        self.by: list[str] = list(routes["by"])
        self.task: str = routes["task"]
        self.classes_ = np.asarray(routes["classes"]) if routes["classes"] else np.asarray([])
        self.feature_names_in_ = np.asarray(routes["features"], dtype=object)
        self._load = load
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()  # scoring threads share the router: load each model once

    def _model(self, route: dict[str, Any]) -> Any:
        cache_key = f"{route['model']}/{route['version']}"
        with self._lock:
            if cache_key not in self._models:
                self._models[cache_key] = self._load(route["model"], route["version"], route["digest"])
            return self._models[cache_key]

    def keys(self, frame: pd.DataFrame) -> np.ndarray:
        columns = [frame[column].map(value_text) for column in self.by]
        return np.asarray([json.dumps(list(values)) for values in zip(*columns, strict=True)], dtype=object)

    def _groups(self, frame: pd.DataFrame) -> list[tuple[dict[str, Any], np.ndarray]]:
        """(route, row positions) per model that serves some of the rows."""
        keys = self.keys(frame)
        segments = self.routes["segments"]
        groups: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(key if key in segments else "", []).append(position)
        return [
            (segments[key] if key else self.routes["fallback"], np.asarray(rows, dtype=np.int64))
            for key, rows in groups.items()
        ]

    def _inputs(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[[str(c) for c in model.feature_names_in_]]

    def served_by(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty(len(frame), dtype=object)
        for route, rows in self._groups(frame):
            out[rows] = f"{route['model']} v{route['version']}"
        return out

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        classes = list(self.classes_)
        out = np.zeros((len(frame), len(classes)), dtype="float64")
        for route, rows in self._groups(frame):
            model = self._model(route)
            proba = np.asarray(model.predict_proba(self._inputs(model, frame.iloc[rows])), dtype="float64")
            columns = np.asarray(
                [classes.index(c) for c in model.classes_], dtype=np.int64
            )  # a segment may lack a class
            out[np.ix_(rows, columns)] = proba
        return out

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.task != "regression":
            return np.asarray(self.classes_)[self.predict_proba(frame).argmax(axis=1)]
        out = np.zeros(len(frame), dtype="float64")
        for route, rows in self._groups(frame):
            model = self._model(route)
            out[rows] = np.asarray(model.predict(self._inputs(model, frame.iloc[rows])), dtype="float64")
        return out

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What the pyfunc returns: `prediction`, `proba_<class>` for classifiers, `served_by`."""
        frame = frame.reset_index(drop=True)
        result = pd.DataFrame(index=frame.index)
        if self.task == "regression":
            result["prediction"] = self.predict(frame)
        else:
            proba = self.predict_proba(frame)
            result["prediction"] = np.asarray(self.classes_)[proba.argmax(axis=1)]
            for index, label in enumerate(self.classes_):
                result[f"proba_{label}"] = proba[:, index]
        result[SERVED_BY] = self.served_by(frame)
        return result


def router_from_file(path: str | Path, load: Loader = load_pinned) -> SegmentRouter:
    return SegmentRouter(json.loads(Path(path).read_text()), load)


def load_routes(name: str, version: str) -> dict[str, Any]:
    """A router version's routes, after its files are checked against the recorded digest."""
    import tempfile

    from conveyor import artifacts, registry
    from conveyor.errors import RegistryError

    found = registry.get_version(name, version)
    expected = found.tags.get("conveyor.artifact_digest")
    with tempfile.TemporaryDirectory() as folder:
        local = artifacts.download(f"models:/{name}/{version}", folder)
        if not expected or artifacts.files_digest(local) != expected:
            raise RegistryError(f"model {name} version {version}: routes changed since registration")
        return dict(json.loads((local / "artifacts" / ROUTES_FILE).read_text()))


def existing_segment_versions(name: str) -> dict[str, list[Any]]:
    """Every version of `name`'s segment models, by model, from one paged search."""
    from conveyor import registry

    client = registry.client()
    found: dict[str, list[Any]] = {}
    token = None
    while True:
        page = client.search_model_versions(
            f"tags.`{SEGMENT_OF}` = '{registry.model_name(name)}'", max_results=10_000, page_token=token
        )
        for version in page:
            found.setdefault(version.name, []).append(version)
        token = page.token
        if not token:
            return found


def _age(millis: int | None) -> str:
    if not millis:
        return "-"
    seconds = max(0.0, time.time() - millis / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def segment_table(name: str, routes: dict[str, Any], metric: str) -> list[dict[str, str]]:
    """One row per segment the router serves (and the all-rows model): its champion version and
    metric, the last decision taken for it, the champion's age, stale or not."""
    versions = existing_segment_versions(name)
    rows = []
    for route in [routes["fallback"], *routes["segments"].values()]:
        found = {str(v.version): v for v in versions.get(route["model"], [])}
        pinned = found.get(str(route["version"]))
        latest = found[max(found, key=int)] if found else None
        value = None if pinned is None else pinned.tags.get(f"conveyor.metric.{metric}")
        decision = "-" if latest is None else f"v{latest.version} {latest.tags.get('conveyor.decision', 'undecided')}"
        rows.append(
            {
                "segment": "(all rows)" if route is routes["fallback"] else str(route["label"]),
                "model": str(route["model"]),
                "version": str(route["version"]),
                "metric": "-" if value is None else f"{metric} {float(value):.4f}",
                "decision": decision,
                "age": _age(None if pinned is None else pinned.creation_timestamp),
                "note": "stale: gone from the data, still serving" if route.get("stale") else "",
                "reason": "" if latest is None else latest.tags.get("conveyor.decision_reason", ""),
            }
        )
    return rows


# The models-from-code file MLflow logs for a router version (no pickle: its code, and routes.json).
ROUTER_CODE = Path(__file__).with_name("segment_router_model.py")
