"""The fleet: one row per model from the registry and its runs, read in a few calls whatever the
number of models, sorted so that what needs a person comes first; and the outcome of one model
trained in a many-spec run."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import task

from conveyor import registry
from conveyor.errors import ConveyorError, storage_error
from conveyor.orchestration import IO_TASK

ANNOUNCED = "conveyor.announced_data_digest"  # model tag, set by the watch flow
DATA_DIGEST = "conveyor.data_digest"  # version tag: the data it was trained on
SEGMENT_OF = "conveyor.segment_of"  # version tag of a segment model: its parent model
ALL_ROWS = ".all_rows"  # `<name>.all_rows`: a segmented model's fallback trained on every row
PENDING = {"pending", "pending-approval"}
RECENT_RUNS = 5  # "failures in the last runs": of this many training runs per model
UNEXPECTED = 70  # exit code of an error Conveyor did not expect (as the CLI's)
FLEET_EXPERIMENT = "conveyor-fleet"
FLEET_PAGE = "fleet/fleet.html"

# Why a row needs a person, most urgent first; the order the view sorts by.
ATTENTION = ("failing", "pending approval", "degraded", "drift", "new data", "no champion")


@dataclass
class FleetRow:
    model: str
    segments: int = 0
    champion: str | None = None
    champion_age_days: float | None = None
    last_version: str | None = None
    last_decision: str = "-"
    last_reason: str = ""
    new_data: bool = False
    monitoring: str = "-"  # ok, drift, degraded, drift-degraded, or - when never monitored
    monitored_version: str | None = None
    failures: int = 0  # FAILED among the last RECENT_RUNS training runs
    runs: int = 0
    last_error: str = ""
    pending: list[str] = field(default_factory=list)  # versions waiting for an approval

    @property
    def attention(self) -> list[str]:
        """Why a person should look, most urgent first (empty: healthy)."""
        found = {
            "failing": bool(self.last_error),
            "pending approval": bool(self.pending),
            "degraded": "degraded" in self.monitoring,
            "drift": "drift" in self.monitoring,
            "new data": self.new_data,
            "no champion": self.champion is None,
        }
        return [word for word in ATTENTION if found[word]]

    @property
    def status(self) -> str:
        return ", ".join(self.attention) or "healthy"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"status": self.status}


def sort_key(row: FleetRow) -> tuple[int, int, str]:
    """Most urgent reason first, then more reasons first, then by name."""
    reasons = row.attention
    first = ATTENTION.index(reasons[0]) if reasons else len(ATTENTION)
    return first, -len(reasons), row.model


def segment_parent(name: str, versions: Iterable[Any], names: set[str]) -> str | None:
    """The model a segment model belongs to: its versions' `conveyor.segment_of` tag, else the
    registered name before the first '.' when that is a model too (`sales.store-3` -> `sales`)."""
    for version in versions:
        parent = version.tags.get(SEGMENT_OF)
        if parent:
            return str(parent)
    head = name.split(".", 1)[0]
    return head if head != name and head in names else None


def _pages(search: Callable[..., Any], **kwargs: Any) -> Iterator[Any]:
    token = None
    while True:
        page = search(**kwargs, page_token=token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def read_fleet(now: float | None = None) -> list[FleetRow]:
    """Every registered model (segment models counted under their parent) with its state.

    A handful of queries however many models: registered models, model versions, experiments,
    and the latest training and monitoring runs, each paged.
    """
    client = registry.client()
    now = time.time() if now is None else now
    models = {m.name: m for m in _pages(client.search_registered_models, max_results=1000)}
    versions: dict[str, list[Any]] = {name: [] for name in models}
    for version in _pages(client.search_model_versions, filter_string="", max_results=10000):
        versions.setdefault(version.name, []).append(version)
    names = set(models)
    parents = {name: segment_parent(name, versions.get(name, []), names) for name in names}
    rows = {name: _model_row(name, models[name], versions.get(name, []), now) for name in names if not parents[name]}
    for name, parent in parents.items():
        if parent:  # the all-rows fallback of a segmented model is not a segment
            rows.setdefault(parent, FleetRow(model=parent)).segments += not name.endswith(ALL_ROWS)
    _add_runs(client, rows)
    return sorted(rows.values(), key=sort_key)


def _model_row(name: str, model: Any, versions: list[Any], now: float) -> FleetRow:
    row = FleetRow(model=name)
    by_number = sorted(versions, key=lambda v: int(v.version))
    aliases = dict(getattr(model, "aliases", None) or {})
    champion = aliases.get(registry.CHAMPION)
    found = next((v for v in by_number if str(v.version) == str(champion)), None)
    if found is not None:
        row.champion = str(found.version)
        row.champion_age_days = max(0.0, (now * 1000 - found.creation_timestamp) / 86_400_000)
    decided = [v for v in by_number if v.tags.get("conveyor.decision")]
    if decided:
        last = decided[-1]
        row.last_version = str(last.version)
        row.last_decision = last.tags["conveyor.decision"]
        row.last_reason = last.tags.get("conveyor.decision_reason", "")
    row.pending = [
        str(v.version)
        for v in by_number
        if v.tags.get("conveyor.approval") in PENDING or v.tags.get("conveyor.decision") in PENDING
    ]
    announced = (model.tags or {}).get(ANNOUNCED)
    row.new_data = bool(announced) and all(v.tags.get(DATA_DIGEST) != announced for v in versions)
    return row


def _add_runs(client: Any, rows: dict[str, FleetRow]) -> None:
    """The last training runs (failures) and the last monitoring verdict of every model."""
    if not rows:
        return
    experiments = [e for e in _pages(client.search_experiments, max_results=1000) if e.name in rows]
    ids = [str(e.experiment_id) for e in experiments]
    if not ids:
        return
    limit = min(50_000, RECENT_RUNS * len(rows) * 4)
    for run in _search_runs(client, ids, "training", limit):
        row = rows.get(run.data.tags.get("conveyor.model", ""))
        if row is None or row.runs >= RECENT_RUNS:
            continue
        row.runs += 1
        if run.info.status == "FAILED":
            row.failures += 1
            if row.runs == 1:  # the latest run failed: the model is failing now
                row.last_error = run.data.tags.get("conveyor.error", "failed") or "failed"
    for run in _search_runs(client, ids, "monitoring", limit):
        row = rows.get(run.data.tags.get("conveyor.model", ""))
        if row is None or row.monitoring != "-" or run.info.status != "FINISHED":
            continue
        row.monitored_version = run.data.tags.get("conveyor.model_version")
        name = run.info.run_name or ""
        row.monitoring = name.split("-", 2)[2] if name.count("-") >= 2 else "ok"


def _search_runs(client: Any, experiment_ids: list[str], kind: str, limit: int) -> list[Any]:
    runs: list[Any] = []
    for start in range(0, len(experiment_ids), 500):  # keep one query's IN list reasonable
        runs += client.search_runs(
            experiment_ids[start : start + 500],
            filter_string=f"tags.`conveyor.kind` = '{kind}'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
    runs.sort(key=lambda run: run.info.start_time or 0, reverse=True)
    return runs


def _age(days: float | None) -> str:
    if days is None:
        return "-"
    if days < 1 / 24:
        return f"{max(1, round(days * 1440))}m"
    if days < 2:
        return f"{days * 24:.0f}h"
    return f"{days:.0f}d"


def table_rows(rows: list[FleetRow]) -> list[dict[str, str]]:
    """The view as text cells: the terminal table, the Prefect table artifact and the HTML page."""
    return [
        {
            "model": row.model,
            "status": row.status,
            "segments": str(row.segments or "-"),
            "champion": f"v{row.champion}" if row.champion else "none",
            "age": _age(row.champion_age_days),
            "last decision": f"v{row.last_version} {row.last_decision}" if row.last_version else "-",
            "why": row.last_reason,
            "new data": "yes" if row.new_data else "no",
            "monitoring": row.monitoring + (f" (v{row.monitored_version})" if row.monitored_version else ""),
            "failures": f"{row.failures}/{row.runs}",
            "pending": ", ".join(f"v{v}" for v in row.pending) or "-",
            "error": row.last_error,
        }
        for row in rows
    ]


def render_text(rows: list[FleetRow], width: int = 60) -> list[str]:
    """The terminal table: one line per model; long reasons cut to `width`."""
    cells = table_rows(rows)
    columns = ["model", "status", "segments", "champion", "age", "last decision", "monitoring", "failures", "pending"]
    for cell in cells:
        cell["why"] = _cut(cell["error"] or cell["why"], width)
    columns.append("why")
    widths = {c: max([len(c), *(len(cell[c]) for cell in cells)]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(cell[c].ljust(widths[c]) for c in columns).rstrip() for cell in cells]
    return lines


def _short_paths(text: str) -> str:
    """A file's name without its folders (URLs kept), so a reason fits a cell."""
    return re.sub(r"(?<![\w:/])/(?:[^/\s]+/)+", "", " ".join(text.split()))


def _cut(text: str, width: int) -> str:
    text = _short_paths(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_html(rows: list[FleetRow], generated: str) -> str:
    """The fleet page (conveyor/templates/fleet.html), self-contained."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from conveyor.report import TEMPLATES

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    needs = sum(bool(row.attention) for row in rows)
    cells = table_rows(rows)
    for cell, row in zip(cells, rows, strict=True):
        cell["level"] = _level(row)
        cell["error"], cell["why"] = _short_paths(cell["error"]), _short_paths(cell["why"])
    return env.get_template("fleet.html").render(rows=cells, needs=needs, total=len(rows), generated=generated)


def _level(row: FleetRow) -> str:
    """The row's colour on the page: bad (failing, degraded), warn (a person should look), ok."""
    reasons = row.attention
    if not reasons:
        return "ok"
    return "bad" if reasons[0] in {"failing", "degraded"} else "warn"


@dataclass(frozen=True)
class FleetPage:
    run_id: str
    experiment_id: str
    tracking_uri: str


def log_fleet_page(html: str, rows: list[FleetRow]) -> FleetPage:
    """The page as an artifact of a run in the `conveyor-fleet` experiment, with counts as metrics."""
    run_id = registry.start_run(FLEET_EXPERIMENT, run_name=f"fleet-{len(rows)}-models", tags={"conveyor.kind": "fleet"})
    try:
        registry.log_text(run_id, html, FLEET_PAGE)
        registry.log_dict(run_id, [row.as_dict() for row in rows], "fleet/fleet.json")
        registry.log_metrics(
            run_id,
            {
                "models": len(rows),
                "needs_attention": sum(bool(row.attention) for row in rows),
                "failing": sum(bool(row.last_error) for row in rows),
                "pending_approvals": sum(len(row.pending) for row in rows),
            },
        )
    except BaseException:
        registry.end_run(run_id, failed=True)
        raise
    registry.end_run(run_id)
    client = registry.client()
    return FleetPage(run_id, str(client.get_run(run_id).info.experiment_id), client.tracking_uri)


@task(name="read_fleet", **IO_TASK)
def read_fleet_task() -> list[FleetRow]:
    return read_fleet()


@task(name="publish_fleet", **IO_TASK)
def publish_fleet(rows: list[FleetRow], generated: str) -> FleetPage:
    """The HTML page logged to MLflow and the table as a Prefect artifact linking to it."""
    from prefect.artifacts import create_table_artifact

    from conveyor.links import run_link

    page = log_fleet_page(render_html(rows, generated), rows)
    needs = sum(bool(row.attention) for row in rows)
    link = run_link(page.tracking_uri, page.experiment_id, page.run_id, FLEET_PAGE)
    create_table_artifact(
        table_rows(rows),
        key="fleet",
        description=f"{len(rows)} model(s), {needs} need a person. Page: {link}"[:2000],
    )
    return page


# One model of a many-spec run: what happened to it, in the summary table and the exit code.


@dataclass(frozen=True)
class SpecOutcome:
    spec: str
    model: str
    status: str  # promoted, kept, rejected, unchanged, skipped, failed
    detail: str
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_label(spec: str) -> str:
    """The model's name as far as a spec that may not load tells it: its file's stem."""
    return Path(spec).name.removesuffix(".yaml").removesuffix(".yml")


def outcome_of(spec: str, state: Any) -> SpecOutcome:
    """A training flow run's final state as one row: its outcome, or its error and exit code."""
    try:
        result = state.result()
    except BaseException as exc:  # the flow's own exception, re-raised from its final state
        return failed_outcome(spec, exc)
    if not isinstance(result, dict):
        return SpecOutcome(spec, spec_label(spec), "failed", f"unexpected result {result!r}"[:500], UNEXPECTED)
    model = str(result.get("model") or spec_label(spec))
    if result.get("reused") or result.get("version") is None:
        return SpecOutcome(spec, model, str(result.get("outcome") or "unchanged"), str(result.get("message", "")))
    return SpecOutcome(spec, model, str(result["outcome"]), str(result.get("message", "")))


def failed_outcome(spec: str, exc: BaseException) -> SpecOutcome:
    known = exc if isinstance(exc, ConveyorError) else storage_error(exc)
    if known is not None:
        return SpecOutcome(spec, spec_label(spec), "failed", str(known), known.exit_code)
    return SpecOutcome(spec, spec_label(spec), "failed", f"{type(exc).__name__}: {exc}", UNEXPECTED)


def outcomes_markdown(outcomes: list[SpecOutcome]) -> str:
    """The parent run's artifact: failed models first, with why."""
    ordered = sorted(outcomes, key=lambda o: (o.status != "failed", o.model))
    rows = [
        "| "
        + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in (o.model, f"**{o.status}**", o.detail))
        + " |"
        for o in ordered
    ]
    failed = sum(o.status == "failed" for o in outcomes)
    head = f"{len(outcomes)} model(s) trained" + (f"; **{failed} failed**" if failed else "")
    table = "\n".join(["| model | outcome | detail |", "| --- | --- | --- |", *rows])
    return f"# Training {len(outcomes)} specs\n\n{head}.\n\n{table}\n"
