"""`conveyor approve | reject | rollback | history`: people's decisions on a model, and its record."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from app.console import Verbose, quiet_prefect, run_or_exit, say
from conveyor.errors import ConveyorError

As = Annotated[str, typer.Option("--as", help="Your name as listed in governance.approvers (declared).")]


def _paused_run(name: str, version: str) -> Any | None:
    """The `approval` flow run paused for this version's answer, on a Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    from flows.governance import approval_tag, on_server

    if not on_server():
        return None
    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[approval_tag(name, version)]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
            ),
            limit=1,
        )
    return found[0] if found else None


def _answer(name: str, version: str, decision: str, approver: str, comment: str) -> str:
    """Resume the paused training run with the answer, or apply it here; the outcome in one line."""
    from conveyor import registry
    from conveyor.spec import find_spec
    from tasks import approvals

    registry.check_reachable()
    spec = find_spec(name)
    given = approvals.Answer(decision, approver, comment)  # type: ignore[arg-type]
    paused = _paused_run(spec.name, version)
    if paused is None:
        return approvals.answer(spec, version, given).message
    # Check here what the flow would refuse, so the person gets the refusal, not a silent re-pause.
    approvals.check_answer(spec, version, given)
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(paused.id, run_input={"decision": decision, "approver": approver, "comment": comment})

    def settled() -> str | None:
        tags = registry.get_version(spec.name, version).tags
        if tags.get("conveyor.decision") != approvals.PENDING:
            return f"{spec.name} v{version}: {tags.get('conveyor.decision')} (answered flow run {paused.id})"
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(paused.id).state
        if state is not None and state.is_paused() and approver in tags.get(approvals.APPROVED_BY, "").split(","):
            return f"{spec.name} v{version}: approved by {approver}; flow run {paused.id} waits for more approvers"
        if state is not None and state.is_final():
            return f"{spec.name} v{version}: flow run {paused.id} ended {state.name}: {state.message or ''}"
        return None

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (line := settled()) is not None:
            return line
        time.sleep(1)
    return f"{spec.name} v{version}: answer sent to flow run {paused.id}; see `conveyor history {spec.name}`"


def approve(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[str, typer.Argument(help="The waiting version.")],
    approver: As,
    comment: Annotated[str, typer.Option(help="Why; recorded in the audit trail and the model card.")] = "",
    verbose: Verbose = False,
) -> None:
    """Approve a version waiting for sign-off: promoted once enough different approvers agree."""
    quiet_prefect(verbose)
    say(run_or_exit(lambda: _answer(name, version, "approve", approver, comment)))


def reject(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[str, typer.Argument(help="The waiting version.")],
    approver: As,
    comment: Annotated[str, typer.Option(help="Why (required).")],
    verbose: Verbose = False,
) -> None:
    """Reject a version waiting for sign-off: it is tagged rejected, the champion stays."""
    quiet_prefect(verbose)
    say(run_or_exit(lambda: _answer(name, version, "reject", approver, comment)))


def rollback(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    actor: As,
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit trail.")],
    to: Annotated[str | None, typer.Option("--to", help="This version instead of the previous champion.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Allow a version that never passed its gates.")] = False,
    verbose: Verbose = False,
) -> None:
    """Move the champion back to the previous champion (or --to VERSION), audited."""
    quiet_prefect(verbose)
    from conveyor import registry
    from tasks.rollback import rollback as roll_back

    def body() -> str:
        registry.check_reachable()
        done = roll_back(name, actor, reason, to, force)
        _publish(name)
        return done.message

    say(run_or_exit(body))


def _publish(name: str) -> None:
    """The Prefect history artifact, when a Prefect server is in use (the MLflow table is always written)."""
    from flows.governance import on_server, publish_history

    if on_server():
        publish_history.fn(name)


def history(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    verbose: Verbose = False,
) -> None:
    """Every decision on the model, newest first, with who, why and on what evidence."""
    quiet_prefect(verbose)
    from conveyor import audit, registry
    from conveyor.spec import find_spec
    from tasks.approvals import expire_overdue

    def body() -> list[audit.HistoryRow]:
        registry.check_reachable()
        try:
            expire_overdue(find_spec(name))  # a request nobody answered in time is rejected now
        except ConveyorError:
            registry.model_name(name)  # no spec here (only the registry): show the record as it is
        rows = audit.history(name)
        if not rows:
            raise ConveyorError(f"no decisions recorded for {name!r} in {registry.client().tracking_uri}")
        return rows

    rows = run_or_exit(body)
    if as_json:
        say(audit.as_json(rows))
        return
    say(f"{'time':<23} {'ver':>4}  {'outcome':<21} {'actor':<22} {'metrics':<30} {'data':<12} {'flow run':<36} reason")
    for row in rows:
        say(
            f"{row.time:<23} {row.version:>4}  {row.outcome:<21} {row.actor[:22]:<22} {row.metrics[:30]:<30} "
            f"{row.data_digest:<12} {row.flow_run or '-':<36} {row.reason}"
        )


def register(app: typer.Typer) -> None:
    """Add `approve`, `reject`, `rollback` and `history` to the `conveyor` command."""
    app.command()(approve)
    app.command()(reject)
    app.command()(rollback)
    app.command()(history)
