"""The model a scoring run uses: one registered version, resolved once, and what a scored row holds."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from conveyor import predictions, registry
from conveyor.errors import RegistryError

ROW = "row"  # the id column when the spec names none: the row's position in the input
MODEL_VERSION = "model_version"
PREDICTION = predictions.PREDICTION
SCORED_AT = predictions.SCORED_AT
SERVED_BY = "served_by"  # segmented models: the segment model version that scored the row


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
    segmented: bool = False  # a router over segment models: each row also says which model served it
    segments: int = 0  # the segment models a router pins (the all-rows fallback not counted)

    @property
    def output_columns(self) -> tuple[str, ...]:
        probabilities = tuple(f"proba_{c}" for c in self.classes)
        served = (SERVED_BY,) if self.segmented else ()
        return (PREDICTION, *probabilities, *served, MODEL_VERSION, SCORED_AT)


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
        moved = registry.unaudited_champion(name)
        if moved and os.environ.get("CONVEYOR_ALLOW_UNAUDITED_CHAMPION") != "1":
            raise RegistryError(
                f"{moved}; refusing to score with it (score a --version, move the alias back through "
                "Conveyor, or set CONVEYOR_ALLOW_UNAUDITED_CHAMPION=1)"
            )
    else:
        found = registry.get_version(name, version)
    resolved = str(found.version)
    if found.tags.get("conveyor.kind") == "segment-router":
        return _segment_router(name, resolved, alias)
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


def _segment_router(name: str, version: str, alias: str | None) -> ServingModel:
    """A segmented model's router version: rows routed to the segment champions it pins."""
    from tasks.segments import SegmentRouter, load_routes

    router = SegmentRouter(load_routes(name, version))
    return ServingModel(
        name=name,
        version=version,
        alias=alias,
        task=router.task,
        features=tuple(str(c) for c in router.feature_names_in_),
        categorical=tuple(_columns_artifact(registry.get_version(name, version).run_id).get("categorical", ())),
        classes=tuple(router.classes_.tolist()),
        model=router,
        segmented=True,
        segments=len(router.routes["segments"]),
    )
