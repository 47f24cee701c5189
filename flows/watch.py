"""The watch flow: announce new data for every spec, so training starts by itself."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from conveyor import registry
from conveyor.errors import ConveyorError
from conveyor.events import DATA_ARRIVED, emit_model_event
from conveyor.spec import PipelineSpec, list_specs, load_spec
from tasks.data import combined_digest, file_digest, resolve_files

ANNOUNCED_TAG = "conveyor.announced_data_digest"


def data_state(spec: PipelineSpec) -> tuple[list[str], str]:
    files = resolve_files(spec.resolve_path(spec.data.path))
    return files, combined_digest({path: file_digest(path) for path in files})


@task(name="check_data", cache_policy=NO_CACHE)
def check_data(spec: PipelineSpec) -> dict[str, Any]:
    """Announce `conveyor.data.arrived` when the spec's files differ from every trained version's
    data and from what was last announced; the same digest is announced once."""
    try:
        files, digest = data_state(spec)
    except ConveyorError as exc:
        return {"model": spec.name, "status": "unreadable", "reason": str(exc)}
    trained = registry.find_version_by_tag(spec.name, "conveyor.data_digest", digest)
    if trained is not None:
        return {"model": spec.name, "status": "trained", "version": str(trained.version), "digest": digest}
    if registry.model_tag(spec.name, ANNOUNCED_TAG) == digest:
        return {"model": spec.name, "status": "announced", "digest": digest}
    champion = registry.alias_version(spec.name, registry.CHAMPION)
    emit_model_event(
        DATA_ARRIVED,
        spec.name,
        {
            "data_digest": digest,
            "files": files,
            "champion_data_digest": None if champion is None else champion.tags.get("conveyor.data_digest"),
        },
        dedupe_key=digest,
    )
    registry.set_model_tag(spec.name, ANNOUNCED_TAG, digest)
    return {"model": spec.name, "status": "arrived", "digest": digest, "files": len(files)}


@flow(name="watch", flow_run_name="watch-data")
def watch_flow(specs: list[str] | None = None) -> list[dict[str, Any]]:
    """Look at every spec's data path and announce data that no version was trained on.

    Args:
        specs: model names to watch (default: every spec under pipelines/)
    """
    logger = get_run_logger()
    paths = list_specs()
    chosen = [load_spec(path) for path in paths]
    if specs:
        chosen = [spec for spec in chosen if spec.name in set(specs)]
    results = [check_data(spec) for spec in chosen]
    for result in results:
        logger.info("%s: %s", result["model"], result["status"])
    return results
