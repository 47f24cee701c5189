"""The watch flow: announce new data for every spec, so training starts by itself.

One broken spec (or one model whose data cannot be read) never stops the others: it gets a
`failed` row, with the reason, in the run's markdown artifact, and the rest are announced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from conveyor import registry
from conveyor.errors import ConveyorError
from conveyor.events import DATA_ARRIVED, emit_model_event
from conveyor.process_exit import exit_quickly
from conveyor.spec import PipelineSpec, list_specs, load_spec
from tasks.data import combined_digest, display_path, file_digest, resolve_files

exit_quickly()  # a flow run on a worker is a process of its own (conveyor.process_exit)

ANNOUNCED_TAG = "conveyor.announced_data_digest"
FAILED = "failed"
_STATUS = {
    "arrived": "new data announced",
    "announced": "already announced, waiting for training",
    "trained": "a version was trained on this data",
    "unreadable": "data cannot be read",
    FAILED: "skipped",
}


def data_state(spec: PipelineSpec) -> tuple[list[str], str]:
    files = resolve_files(spec.resolve_path(spec.data.path))
    return files, combined_digest({path: file_digest(path) for path in files})


def load_specs(paths: list[Path], names: list[str] | None) -> tuple[list[PipelineSpec], list[dict[str, Any]]]:
    """The specs that load, and a failed row (named after the file) for each one that does not."""
    loaded, failed = [], []
    for path in paths:
        try:
            spec = load_spec(path)
        except ConveyorError as exc:
            if not names or path.stem in names:
                failed.append(
                    {"model": path.stem, "spec": display_path(str(path)), "status": FAILED, "reason": str(exc)}
                )
            continue
        if not names or spec.name in names:
            loaded.append(spec)
    return loaded, failed


def watch_markdown(results: list[dict[str, Any]]) -> str:
    """The run's artifact: one row per spec, failed ones first, with what was done or why not."""
    ordered = sorted(results, key=lambda r: (r["status"] != FAILED, r["model"]))
    rows = []
    for result in ordered:
        cells = [result["model"], f"**{result['status']}**", _STATUS.get(result["status"], ""), _detail(result)]
        rows.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    failed = sum(r["status"] == FAILED for r in results)
    headline = f"{len(results)} spec(s) watched" + (f"; **{failed} failed** and skipped" if failed else "")
    table = "\n".join(["| model | status | meaning | detail |", "| --- | --- | --- | --- |", *rows])
    return f"# Watch\n\n{headline}.\n\n{table}\n"


def _detail(result: dict[str, Any]) -> str:
    if "reason" in result:
        return str(result["reason"])
    digest = f"digest `{str(result.get('digest', ''))[:12]}`"
    if result["status"] == "arrived":
        return f"{result.get('files', 0)} file(s), {digest}"
    if "version" in result:
        return f"version {result['version']}, {digest}"
    return digest


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

    A spec that does not load, or whose check fails, is skipped with its reason; the rest go on.

    Args:
        specs: model names to watch (default: every spec under pipelines/)
    """
    logger = get_run_logger()
    chosen, results = load_specs(list_specs(), specs)
    for spec in chosen:
        try:
            results.append(check_data(spec))
        except Exception as exc:  # one model's failure (its registry, its events) must not stop the rest
            logger.warning("%s: watch failed: %s", spec.name, exc)
            results.append({"model": spec.name, "status": FAILED, "reason": f"{type(exc).__name__}: {exc}"})
    for result in results:
        logger.info(
            "%s: %s%s", result["model"], result["status"], f" ({result['reason']})" if "reason" in result else ""
        )
    create_markdown_artifact(watch_markdown(results), key="watch", description=_description(results))
    return results


def _description(results: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "no specs"
