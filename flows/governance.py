"""People in the loop: the approval form a waiting training run shows in the Prefect UI, the
rollback flow (a deployment with a form) and the history artifact."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from pydantic import Field

from conveyor import audit, links, locks, registry
from conveyor.errors import ConveyorError
from conveyor.orchestration import IO_TASK
from conveyor.process_exit import exit_quickly
from conveyor.spec import PipelineSpec, find_spec
from tasks import approvals
from tasks.lineage import DECISION
from tasks.rollback import rollback
from tasks.summary import TrainingResult, artifact_key

exit_quickly()  # a flow run on a worker is a process of its own (conveyor.process_exit)


class ApprovalForm(RunInput):
    """The form a waiting training run shows under Resume in the Prefect UI."""

    decision: Literal["approve", "reject"] = Field(description="Approve promotes (once enough people approved).")
    approver: str = Field(description="Your name as listed in the spec's governance.approvers (declared, not checked).")
    comment: str = Field("", description="Why; required to reject. Goes to the audit trail and the model card.")


def on_server() -> bool:
    """A Prefect server a person can open (the stack): PREFECT_API_URL set, and not the temporary
    server a command started for itself (conveyor.temporary_api.one_prefect_api)."""
    url = os.environ.get("PREFECT_API_URL")
    return bool(url) and url != os.environ.get(locks.TEMPORARY_API)


def approval_description(spec: PipelineSpec, version: str, needed_more: int) -> str:
    """Markdown above the form: candidate and champion metrics side by side, links to run and card."""
    name = spec.name
    found = registry.get_version(name, version)
    tags = found.tags
    run = registry.client().get_run(found.run_id)
    uri = registry.client().tracking_uri
    experiment = run.info.experiment_id
    previous = tags.get("conveyor.previous_champion")
    champion = f"champion v{previous}" if previous else "champion (none yet)"
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

| metric (same holdout) | candidate v{version} | {champion} |
| --- | --- | --- |
{rows}

Evidence: {links.run_link(uri, experiment, found.run_id)};
{links.run_link(uri, experiment, found.run_id, "model_card.md")}; {links.model_version_link(uri, name, version)}.

Risk tier **{spec.governance.risk_tier}**: {needed_more} more approval(s) needed (approved so far: {approved}).
Approvers: {", ".join(spec.governance.approvers)}. The name is declared, not authenticated.
Answer by {spec.governance.approval_timeout_hours:g} h after the request, or the candidate is rejected.
"""


APPROVAL_DEPLOYMENT = "approval/approval"


def approval_tag(name: str, version: str) -> str:
    """The tag of the flow run that waits for people on this version (the CLI finds it by it)."""
    return f"approval:{name}:v{version}"


def wait_for_approval(spec: PipelineSpec, result: TrainingResult) -> TrainingResult:
    """On a Prefect server, start the `approval` run that waits for people on a pending version.

    The wait is a run of its own, not a pause of this training run: a paused run gives up its
    deployment's concurrency lease, which Prefect 3.9's engine then fails to renew and crashes the
    run; and a training run (its worker process) should not be held for days."""
    if result.outcome != approvals.PENDING or result.version is None or result.reused or not on_server():
        return result
    from prefect.deployments import run_deployment

    waiting: Any = run_deployment(
        APPROVAL_DEPLOYMENT,
        parameters={"model": spec.name, "version": result.version},
        timeout=0,
        as_subflow=False,
        tags=[f"model:{spec.name}", approval_tag(spec.name, result.version)],
    )
    where = links.prefect_flow_run_url(str(waiting.id)) or str(waiting.id)
    return dataclasses.replace(result, reason=f"{result.reason}; or in the Prefect UI: Resume on {where}")


@flow(name="approval", log_prints=False)
def approval_flow(model: str, version: str) -> object:
    """Wait for people on a pending version: a form under Resume, until enough approvers said yes,
    one said no, or the request timed out; then the decision (promoted, kept or rejected).

    Args:
        model: the model (its spec's name)
        version: the version waiting for approval
    """
    logger = get_run_logger()
    try:
        spec = find_spec(model)
        outcome = _ask_until_decided(spec, version)
    except ConveyorError as exc:
        logger.error("%s", exc, extra={"conveyor_expected": True})
        return Failed(message=str(exc)[:2000], data=exc)
    publish_history(model)
    logger.info("%s", outcome)
    return Completed(message=outcome)


def _ask_until_decided(spec: PipelineSpec, version: str) -> str:
    logger = get_run_logger()
    name = spec.name
    since = approvals.requested_at(name, version) or time.time()
    deadline = since + spec.governance.approval_timeout_hours * 3600
    asked = 0
    while registry.get_version(name, version).tags.get(DECISION) == approvals.PENDING:
        remaining = deadline - time.time()
        if remaining <= 0:
            approvals.expire_if_overdue(spec, version)
            break
        approved = registry.get_version(name, version).tags.get(approvals.APPROVED_BY, "").split(",")
        more = approvals.needed(spec) - len([who for who in approved if who])
        form = ApprovalForm.with_initial_data(description=approval_description(spec, version, more), decision="approve")
        asked += 1
        try:
            key = f"approval-v{version}-{asked}"
            given = pause_flow_run(wait_for_input=form, timeout=max(1, int(remaining)), key=key)
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
    tags = registry.get_version(name, version).tags
    return f"{name} v{version} {tags.get(DECISION)}: {tags.get('conveyor.decision_reason', '')}"


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
