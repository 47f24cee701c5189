"""Approval before promotion: a candidate the gates passed waits for people when the spec's risk
tier asks for them (medium: one, high: two different approvers).

The waiting version is registered, `challenger`, decided `pending`; `champion` does not move.
An answer (from the Prefect form or `conveyor approve|reject`) is checked against the spec's
approvers, audited with who, when and what they said, and, once enough people approved, applied by
the promotion step itself (`apply_promotion`: same lock, and a re-check if the champion moved
meanwhile). A refusal or an expired request ends the version `rejected`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from conveyor import audit, registry
from conveyor.decision import Decision
from conveyor.errors import RegistryError
from conveyor.spec import APPROVALS_NEEDED, PipelineSpec, TaskType
from tasks.lineage import DECISION
from tasks.registry import PREVIOUS, Registered, apply_promotion

PENDING = "pending"
APPROVAL = "conveyor.approval"  # pending, approved, rejected, timed-out
APPROVED_BY = "conveyor.approved_by"  # comma-separated approvers so far
CARD = "model_card.md"


class ApprovalRefused(RegistryError):
    """An answer the spec or the version's state does not allow: nothing was changed."""


@dataclass(frozen=True)
class Answer:
    decision: Literal["approve", "reject"]
    approver: str
    comment: str = ""


@dataclass(frozen=True)
class Outcome:
    """What an answer did: `settled` when the version is decided (promoted, kept or rejected)."""

    version: str
    decision: str
    message: str
    settled: bool


def needed(spec: PipelineSpec) -> int:
    return APPROVALS_NEEDED[spec.governance.risk_tier]


def how_to_answer(name: str, version: str) -> str:
    return (
        f"answer with `conveyor approve {name} {version} --as NAME [--comment TEXT]` or "
        f"`conveyor reject {name} {version} --as NAME --comment TEXT`"
    )


def require_approval(spec: PipelineSpec, plan: Decision, version: str, allow_promotion: bool) -> Decision:
    """The plan, or `pending` when it would promote a model whose risk tier needs people."""
    count = needed(spec)
    if plan.outcome != "promoted" or count == 0 or not allow_promotion:
        return plan
    who = " or ".join(spec.governance.approvers)
    return Decision(
        "pending",  # type: ignore[arg-type]
        f"{plan.reason}; waits for {count} approval(s) ({spec.governance.risk_tier} risk, by {who}): "
        + how_to_answer(spec.name, version),
    )


def requested_at(name: str, version: str) -> float | None:
    """When the version started waiting (epoch seconds): its `pending` audit entry."""
    for entry in registry.audit_trail(name, limit=1000):
        if str(entry.get("version")) == str(version) and entry.get("outcome") == PENDING:
            return int(entry["time"]) / 1000
    return None


def recorded_metrics(name: str, version: str) -> dict[str, float]:
    """The metrics registered with a version (on its own holdout)."""
    tags = registry.get_version(name, version).tags
    return {
        key.removeprefix("conveyor.metric."): float(value)
        for key, value in tags.items()
        if key.startswith("conveyor.metric.")
    }


def _check_approver(spec: PipelineSpec, approver: str) -> None:
    listed = spec.governance.approvers
    if approver not in listed:
        raise ApprovalRefused(
            f"{approver!r} is not an approver of {spec.name} (governance.approvers: {', '.join(listed) or 'none'})"
        )


def _settle_rejected(spec: PipelineSpec, version: str, outcome: str, actor: str, reason: str, comment: str) -> None:
    """Decide a waiting version `rejected` (by a person or by the clock), audited; under the lock."""
    name = spec.name
    tags = registry.get_version(name, version).tags
    registry.record_audit(
        name,
        {
            "version": version,
            "outcome": outcome,
            "reason": reason,
            "comment": comment,
            "actor": actor,
            "previous_champion": tags.get(PREVIOUS, ""),
        },
    )
    registry.set_version_tags(
        name,
        version,
        {
            APPROVAL: "timed-out" if outcome == audit.TIMED_OUT else "rejected",
            DECISION: "rejected",
            "conveyor.decision_reason": reason[:5000],
        },
    )
    registry.describe_version(name, version, f"rejected: {reason}")


def expire_if_overdue(spec: PipelineSpec, version: str, now: float | None = None) -> bool:
    """Reject a version that waited longer than `approval_timeout_hours` (True when it did)."""
    name = spec.name
    hours = spec.governance.approval_timeout_hours
    since = requested_at(name, version)
    now = time.time() if now is None else now
    if since is None or now - since < hours * 3600:
        return False
    with registry.promotion_lock(name):
        if registry.get_version(name, version).tags.get(DECISION) != PENDING:
            return False
        reason = f"no decision within approval_timeout_hours ({hours:g} h) of the request"
        _settle_rejected(spec, version, audit.TIMED_OUT, "conveyor (approval timeout)", reason, "")
    after_person_decision(name, version)
    return True


def expire_overdue(spec: PipelineSpec, now: float | None = None) -> list[str]:
    """Reject every version of the model whose approval request expired; the versions rejected."""
    return [
        str(version.version)
        for version in registry.list_versions(spec.name)
        if version.tags.get(DECISION) == PENDING and expire_if_overdue(spec, str(version.version), now)
    ]


def check_answer(spec: PipelineSpec, version: str, given: Answer) -> None:
    """Refuse, in one line, an answer that cannot apply: an unlisted approver, a rejection without
    a reason, a version not waiting, an approver who already approved it."""
    name = spec.name
    _check_approver(spec, given.approver)
    if given.decision == "reject" and not given.comment.strip():
        raise ApprovalRefused(f"a rejection of {name} v{version} needs a comment saying why (--comment)")
    tags = registry.get_version(name, version).tags
    if tags.get(DECISION) != PENDING:
        raise ApprovalRefused(f"{name} v{version} is not waiting for approval (decision: {tags.get(DECISION, 'none')})")
    if given.decision == "approve" and given.approver in tags.get(APPROVED_BY, "").split(","):
        raise ApprovalRefused(
            f"{given.approver} already approved {name} v{version}; it needs {needed(spec)} different approvers"
        )


def answer(spec: PipelineSpec, version: str, given: Answer, now: float | None = None, flow_run_id: str = "") -> Outcome:
    """Apply one person's answer to a waiting version; refused (nothing changed) when not allowed."""
    name = spec.name
    check_answer(spec, version, given)
    if expire_if_overdue(spec, version, now):
        raise ApprovalRefused(
            f"{name} v{version} waited longer than approval_timeout_hours "
            f"({spec.governance.approval_timeout_hours:g} h): it is now rejected"
        )
    count = needed(spec)
    with registry.promotion_lock(name):
        tags = registry.get_version(name, version).tags
        if tags.get(DECISION) != PENDING:  # answered meanwhile
            raise ApprovalRefused(f"{name} v{version} is not waiting for approval (decision: {tags.get(DECISION)})")
        if given.decision == "reject":
            reason = f"rejected by {given.approver}"
            _settle_rejected(spec, version, audit.REFUSED, given.approver, reason, given.comment)
            outcome = Outcome(version, "rejected", f"{name} v{version} rejected by {given.approver}", True)
        else:
            approvers = [who for who in tags.get(APPROVED_BY, "").split(",") if who]
            if given.approver in approvers:
                raise ApprovalRefused(
                    f"{given.approver} already approved {name} v{version}; it needs {count} different approvers"
                )
            approvers.append(given.approver)
            registry.record_audit(
                name,
                {
                    "version": version,
                    "outcome": audit.APPROVED,
                    "reason": f"approval {len(approvers)} of {count}",
                    "comment": given.comment,
                    "actor": given.approver,
                    "flow_run_id": flow_run_id,
                },
            )
            registry.set_version_tags(name, version, {APPROVED_BY: ",".join(approvers)})
            outcome = Outcome(
                version,
                "approved",
                f"{name} v{version} approved by {given.approver} ({len(approvers)} of {count}); waits for "
                f"{count - len(approvers)} more",
                False,
            )
    if outcome.decision == "approved" and len(approvers) >= count:
        outcome = _promote_approved(spec, version, approvers)
    after_person_decision(name, version)
    return outcome


def _promote_approved(spec: PipelineSpec, version: str, approvers: list[str]) -> Outcome:
    """The promotion step, as the training run would have applied it, re-checked if the champion moved."""
    name = spec.name
    found = registry.get_version(name, version)
    if spec.task is None:  # the primary metric depends on the task the training run settled
        spec = spec.for_task(cast("TaskType", found.tags.get("conveyor.task", "binary")))
    compared_with = found.tags.get(PREVIOUS) or None
    gates = found.tags.get("conveyor.intent_reason", "").split("; waits for ")[0]  # without the how-to-answer
    plan = Decision("promoted", f"approved by {', '.join(approvers)}; {gates}")
    registered = Registered(version, found.run_id, f"models:/{name}/{version}")
    decision = apply_promotion(
        spec,
        registered,
        plan,
        compared_with,
        recorded_metrics(name, version),
        lambda other: recorded_metrics(name, other),
        True,
        actor=", ".join(approvers),
    )
    registry.set_version_tags(name, version, {APPROVAL: "approved"})
    return Outcome(version, decision.outcome, f"{name} v{version} {decision.outcome}: {decision.reason}", True)


def card_with_approvals(card: str, approvals: list[dict[str, Any]]) -> str:
    """The Markdown card with its "Approvals" section replaced (or added at the end)."""
    from tasks.card import approvals_section

    lines = card.rstrip("\n").split("\n")
    if "## Approvals" in lines:
        start = lines.index("## Approvals")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[:start] + lines[end:]
    return "\n".join(lines).rstrip("\n") + "\n\n" + approvals_section(approvals)


def after_person_decision(name: str, version: str) -> None:
    """Bring the version's card (Markdown and HTML), its run's name and the history table up to date."""
    from tasks.card import card_html

    found = registry.get_version(name, version)
    run_id = found.run_id
    try:
        card = registry.artifact_text(run_id, CARD)
    except Exception:  # a version registered before cards existed
        card = f"# Model card: {name} v{version}\n"
    updated = card_with_approvals(card, audit.person_decisions(name, version))
    registry.log_text(run_id, updated, CARD)
    registry.log_text(run_id, card_html(updated), "model_card.html")
    decision = found.tags.get(DECISION, "")
    registry.rename_run(run_id, f"v{version}-{decision}")
    registry.set_tags(run_id, {"conveyor.decision": decision})
    audit.publish_mlflow_table(name, audit.history(name))
