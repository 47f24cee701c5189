"""People in the loop: the approval form a waiting training run shows in the Prefect UI, the
rollback flow (a deployment with a form) and the history artifact."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from pydantic import Field

from conveyor import audit, links, registry
from conveyor.errors import ConveyorError
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec, find_spec
from tasks import approvals
from tasks.lineage import DECISION
from tasks.rollback import rollback
from tasks.summary import TrainingResult, artifact_key


class ApprovalForm(RunInput):
    """The form a waiting training run shows under Resume in the Prefect UI."""

    decision: Literal["approve", "reject"] = Field(description="Approve promotes (once enough people approved).")
    approver: str = Field(description="Your name as listed in the spec's governance.approvers (declared, not checked).")
    comment: str = Field("", description="Why; required to reject. Goes to the audit trail and the model card.")


def on_server() -> bool:
    """A Prefect server a person can open (the stack), not a temporary one (PREFECT_API_URL set)."""
    return bool(os.environ.get("PREFECT_API_URL"))


def approval_description(spec: PipelineSpec, version: str, needed_more: int) -> str:
    """Markdown above the form: candidate and champion metrics side by side, links to run and card."""
    name = spec.name
    found = registry.get_version(name, version)
    tags = found.tags
    run = registry.client().get_run(found.run_id)
    uri = registry.client().tracking_uri
    experiment = run.info.experiment_id
    champion = tags.get("conveyor.previous_champion") or "none"
    metrics = {key: value for key, value in run.data.metrics.items() if not key.startswith("champion.")}
    rows = "\n".join(
        f"| {key} | {value:.4f} | "
        + (f"{run.data.metrics[f'champion.{key}']:.4f}" if f"champion.{key}" in run.data.metrics else "-")
        + " |"
        for key, value in sorted(metrics.items())
    )
    approved = tags.get(approvals.APPROVED_BY) or "nobody yet"
    return f"""## Approve {name} v{version} as champion?

{tags.get("conveyor.intent_reason", "").split("; waits for")[0]}.

| metric (same holdout) | candidate v{version} | champion v{champion} |
| --- | --- | --- |
{rows}

Evidence: {links.run_link(uri, experiment, found.run_id)};
{links.run_link(uri, experiment, found.run_id, "model_card.md")}; {links.model_version_link(uri, name, version)}.

Risk tier **{spec.governance.risk_tier}**: {needed_more} more approval(s) needed (approved so far: {approved}).
Approvers: {", ".join(spec.governance.approvers)}. The name is declared, not authenticated.
Answer by {spec.governance.approval_timeout_hours:g} h after the request, or the candidate is rejected.
"""


def wait_for_approval(spec: PipelineSpec, result: TrainingResult) -> TrainingResult:
    """On a Prefect server, pause the training run (its model slot already released) until enough
    people answer the form, a person rejects, or the request times out; then the final result."""
    if result.outcome != approvals.PENDING or result.version is None or result.reused or not on_server():
        return result
    logger = get_run_logger()
    name, version = spec.name, result.version
    since = approvals.requested_at(name, version) or time.time()
    deadline = since + spec.governance.approval_timeout_hours * 3600
    asked = 0
    while registry.get_version(name, version).tags.get(DECISION) == approvals.PENDING:
        remaining = deadline - time.time()
        if remaining <= 0:
            approvals.expire_if_overdue(spec, version)
            break
        approved = [who for who in registry.get_version(name, version).tags.get(approvals.APPROVED_BY, "").split(",")]
        more = approvals.needed(spec) - len([who for who in approved if who])
        form = ApprovalForm.with_initial_data(description=approval_description(spec, version, more), decision="approve")
        asked += 1
        try:
            given = pause_flow_run(
                wait_for_input=form, timeout=max(1, int(remaining)), key=f"approval-v{version}-{asked}"
            )
        except FlowPauseTimeout:
            approvals.expire_if_overdue(spec, version, now=deadline)
            break
        try:
            outcome = approvals.answer(
                spec,
                version,
                approvals.Answer(given.decision, given.approver.strip(), given.comment),
                flow_run_id=str(flow_run.id or ""),
            )
        except ConveyorError as exc:  # an unlisted name, a rejection without comment: ask again
            logger.warning("%s", exc)
            continue
        logger.info("%s", outcome.message)
    publish_history(name)
    tags = registry.get_version(name, version).tags
    champion = registry.alias_version(name, registry.CHAMPION)
    return dataclasses.replace(
        result,
        outcome=tags.get(DECISION, result.outcome),
        reason=tags.get("conveyor.decision_reason", result.reason),
        champion=None if champion is None else str(champion.version),
    )


@task(name="publish_history", **IO_TASK)
def publish_history(name: str) -> None:
    """The model's history as one Prefect table artifact and one MLflow table."""
    rows = audit.history(name)
    audit.publish_mlflow_table(name, rows)
    create_table_artifact(
        [dataclasses.asdict(row) for row in rows],
        key=artifact_key("history", name),
        description=f"Every decision on {name}, newest first ({len(rows)}).",
    )


@flow(name="rollback", log_prints=False)
def rollback_flow(
    model: str, requested_by: str, reason: str, to_version: str | None = None, force: bool = False
) -> object:
    """Move a model's champion back to the previous champion (or `to_version`), audited.

    Args:
        model: the model (its spec's name)
        requested_by: who rolls back (declared, not authenticated)
        reason: why; goes to the audit trail
        to_version: this version instead of the previous champion
        force: allow a version that never passed its gates (audited as forced)
    """
    logger = get_run_logger()
    try:
        find_spec(model)
        done = rollback(model, requested_by, reason, to_version, force)
    except ConveyorError as exc:
        logger.error("%s", exc, extra={"conveyor_expected": True})
        return Failed(message=str(exc)[:2000], data=exc)
    publish_history(model)
    logger.info("%s", done.message)
    return Completed(message=done.message, data=dataclasses.asdict(done))
