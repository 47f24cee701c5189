"""A model's history: every decision the audit trail holds (by the gates, by a person, by a
rollback), with its evidence, newest first; and the same history as one MLflow table."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from conveyor import registry

# Audit outcomes written by people's decisions and rollbacks (the gates write promoted, kept,
# rejected and pending), and how the history names them.
APPROVED = "approved"
REFUSED = "rejected-by-person"
TIMED_OUT = "timed-out"
ROLLED_BACK = "rolled-back"
LABELS = {REFUSED: "rejected by a person", TIMED_OUT: "timed out", ROLLED_BACK: "rolled back"}


@dataclass(frozen=True)
class HistoryRow:
    time: str
    version: str
    outcome: str
    actor: str
    reason: str
    metrics: str
    data_digest: str
    flow_run: str
    champion_after: str


def _when(millis: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(millis) / 1000)) + " UTC"


def _metrics(entry: dict[str, Any], version_tags: dict[str, str], run: Any | None) -> str:
    """The primary metric compared: the candidate's and the champion's on the same holdout."""
    if entry.get("metrics"):
        return str(entry["metrics"])
    metric = version_tags.get("conveyor.primary_metric") or next(
        (key.removeprefix("conveyor.metric.") for key in sorted(version_tags) if key.startswith("conveyor.metric.")),
        "",
    )
    if not metric or run is None:
        return ""
    mine, theirs = run.data.metrics.get(metric), run.data.metrics.get(f"champion.{metric}")
    shown = f"{metric} {mine:.4g}" if mine is not None else ""
    previous = entry.get("previous_champion")
    if theirs is not None and previous:
        shown += f" vs v{previous} {theirs:.4g}"
    return shown


def history(name: str, limit: int = 1000) -> list[HistoryRow]:
    """Every audited decision on `name`, newest first, joined with its version's evidence."""
    versions = {str(v.version): v for v in registry.list_versions(name)}
    runs: dict[str, Any] = {}

    def run_of(run_id: str) -> Any | None:
        if run_id and run_id not in runs:
            try:
                runs[run_id] = registry.client().get_run(run_id)
            except Exception:  # deleted run: the row keeps what the audit entry says
                runs[run_id] = None
        return runs.get(run_id)

    rows = []
    for entry in registry.audit_trail(name, limit=limit):
        version = str(entry.get("version", ""))
        found = versions.get(version)
        tags = dict(found.tags) if found is not None else {}
        run = run_of(str(entry.get("run_id") or (found.run_id if found is not None else "")))
        flow_run = entry.get("flow_run_id") or (run.data.tags.get("conveyor.prefect_flow_run_id", "") if run else "")
        outcome = str(entry.get("outcome", ""))
        reason = str(entry.get("reason", ""))
        if entry.get("comment"):
            reason = f"{reason}: {entry['comment']}" if reason else str(entry["comment"])
        rows.append(
            HistoryRow(
                time=_when(entry["time"]),
                version=version,
                outcome=LABELS.get(outcome, outcome),
                actor=str(entry.get("actor", "")),
                reason=" ".join(reason.split()),
                metrics=_metrics(entry, tags, run),
                data_digest=tags.get("conveyor.data_digest", "")[:12],
                flow_run=str(flow_run or ""),
                champion_after=str(entry.get("champion_after", "")),
            )
        )
    return rows


def person_decisions(name: str, version: str) -> list[dict[str, str]]:
    """The approvals and refusals people gave `version`, oldest first (for its model card)."""
    entries = [
        entry
        for entry in registry.audit_trail(name, limit=1000)
        if str(entry.get("version")) == str(version) and entry.get("outcome") in (APPROVED, REFUSED, TIMED_OUT)
    ]
    return [
        {
            "approver": str(entry.get("actor", "")),
            "decision": LABELS.get(str(entry["outcome"]), str(entry["outcome"])),
            "comment": str(entry.get("comment", "")),
            "time": _when(entry["time"]),
        }
        for entry in reversed(entries)
    ]


def publish_mlflow_table(name: str, rows: list[HistoryRow]) -> str:
    """Write the history as one table (`history.json`) on the model's history run in the audit
    experiment, created once; the MLflow UI shows it under the run's artifacts. Its run id."""
    import pandas as pd

    client = registry.client()
    experiment_id = registry.ensure_experiment(registry.AUDIT_EXPERIMENT)
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`conveyor.history_of` = '{registry.model_name(name)}'",
        max_results=1,
    )
    if found:
        run_id = str(found[0].info.run_id)
    else:
        # Not `conveyor.model`: the audit trail is the runs tagged with that, one per decision.
        tags = {"conveyor.history_of": name, "mlflow.runName": f"{name}-history"}
        run_id = str(client.create_run(experiment_id, tags=tags).info.run_id)
        client.set_terminated(run_id, "FINISHED")
    frame = pd.DataFrame([asdict(row) for row in rows], columns=list(HistoryRow.__dataclass_fields__))
    client.log_table(run_id, data=frame, artifact_file="history.json")
    client.set_tag(run_id, "mlflow.note.content", f"History of {name}: {len(rows)} decisions, newest first.")
    return run_id


def as_json(rows: list[HistoryRow]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2)
