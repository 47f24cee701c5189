"""Register and promote: the tasks that write to the registry (never cached).

Promotion is one idempotent step. The pure decision (`conveyor.decision.decide`) gives a plan;
`apply_promotion` takes the model's promotion lock, re-reads the champion, re-decides if it
moved, writes its intent on the version, moves the aliases, records the audit entry and writes
the decision tag last. A rerun after a crash at any point adopts the undecided version and
finishes the job, so registry, aliases and audit trail agree.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from conveyor import registry
from conveyor.decision import Decision, decide
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.lineage import DECISION, HELD

# Written before any alias moves: what this promotion is about to do, and from which champion.
INTENT = "conveyor.intent"
INTENT_REASON = "conveyor.intent_reason"
PREVIOUS = "conveyor.previous_champion"

# The steps of an apply, in order; `checkpoint(step)` is called after each (tests inject crashes).
STEPS = ("decided", "intent", "challenger", "champion", "audit", "decision")


@dataclass(frozen=True)
class Registered:
    version: str
    run_id: str
    model_uri: str


def _no_checkpoint(step: str) -> None:
    return None


@task(name="register_model", **IO_TASK)
def register_model(
    name: str, packaged: registry.PackagedModel, run_id: str, tags: dict[str, str], description: str = ""
) -> Registered:
    """Register a version named after the spec, tagged with its lineage; idempotent per run."""
    registry.describe_model(name, description or f"Trained by Conveyor from pipelines/{name}.yaml.")
    version = registry.register_version(
        name,
        packaged.model_uri,
        run_id,
        {**tags, "conveyor.artifact_digest": packaged.artifact_digest},
        model_id=packaged.model_id,
    )
    return Registered(str(version.version), run_id, packaged.model_uri)


@task(name="load_champion", **IO_TASK)
def load_champion(name: str) -> tuple[str | None, Any | None]:
    """The current champion's version and model (checked against its artifact digest), or none."""
    current = registry.alias_version(name, registry.CHAMPION)
    if current is None:
        return None, None
    return str(current.version), registry.load_model(name, str(current.version))


def apply_promotion(
    spec: PipelineSpec,
    registered: Registered,
    plan: Decision,
    compared_with: str | None,
    candidate: dict[str, float],
    rescore: Callable[[str], dict[str, float] | None],
    allow_promotion: bool,
    checkpoint: Callable[[str], None] = _no_checkpoint,
    actor: str | None = None,
    locked: bool = False,
    fresh: bool = False,
) -> Decision:
    """Apply the plan under the model's promotion lock; safe to call again after a crash.
    `actor` is who the audit names (the approvers of an approved version; else the training flow).
    `locked`: the caller already holds the lock that guards this model (a segment flow holds its
    spec's for the whole fan-out: one acquisition, not one per segment model).
    `fresh`: the caller registered this version moments ago, so no earlier attempt wrote its
    intent or its audit entry (two registry reads fewer per segment model)."""
    name, version = spec.name, registered.version
    with contextlib.nullcontext() if locked else registry.promotion_lock(name):
        tags = {} if fresh else registry.get_version(name, version).tags
        current = registry.alias_version(name, registry.CHAMPION)
        current_version = None if current is None else str(current.version)
        if current_version == version:
            # An interrupted run of this version already moved the alias: finish what it began.
            decision = Decision("promoted", tags.get(INTENT_REASON) or plan.reason)
            previous = tags.get(PREVIOUS) or ""
            held = False
        else:
            decision = plan
            if current_version != compared_with and plan.outcome == "promoted":
                champion_metrics = rescore(current_version) if current_version else None
                again = decide(
                    spec.primary_metric, candidate, champion_metrics, spec.evaluation.floors, spec.evaluation.margin
                )
                decision = Decision(again.outcome, f"{again.reason} (re-checked against v{current_version})")
            held = decision.outcome == "promoted" and not allow_promotion
            if held:
                decision = Decision("kept", f"{decision.reason}; promotion not allowed for this run")
            previous = current_version or ""
        checkpoint("decided")
        registry.set_version_tags(
            name, version, {INTENT: decision.outcome, INTENT_REASON: decision.reason[:5000], PREVIOUS: previous}
        )
        checkpoint("intent")
        registry.set_alias(name, registry.CHALLENGER, version)
        checkpoint("challenger")
        if decision.outcome == "promoted":
            registry.set_alias(name, registry.CHAMPION, version)
        checkpoint("champion")
        if fresh or not registry.audit_recorded(name, version, decision.outcome):
            registry.record_audit(
                name,
                {
                    "version": version,
                    "outcome": decision.outcome,
                    "reason": decision.reason,
                    "previous_champion": previous,
                    "champion_after": version if decision.outcome == "promoted" else previous,
                    "actor": actor or f"training-flow ({getpass.getuser()})",
                    "run_id": registered.run_id,
                },
            )
        checkpoint("audit")
        registry.set_version_tags(
            name,
            version,
            {DECISION: decision.outcome, "conveyor.decision_reason": decision.reason[:5000], HELD: str(held).lower()},
        )
        registry.describe_version(name, version, f"{decision.outcome}: {decision.reason}")
        checkpoint("decision")
    return decision


@task(name="promote_model", cache_policy=NO_CACHE)
def promote_model(
    spec: PipelineSpec,
    registered: Registered,
    plan: Decision,
    compared_with: str | None,
    candidate: dict[str, float],
    rescore: Callable[[str], dict[str, float] | None],
    allow_promotion: bool,
) -> Decision:
    """Move `challenger` (and `champion` when the plan says so) and record the decision."""
    return apply_promotion(
        spec, registered, plan, compared_with, candidate, rescore, allow_promotion, checkpoint=CHECKPOINT
    )


def finish_interrupted(spec: PipelineSpec, version: Any) -> Decision | None:
    """Finish the promotion of a version an interrupted run left undecided, from the intent it
    wrote; a version with no intent (no alias moved yet) is deleted. None when deleted."""
    name, tags = spec.name, version.tags
    if INTENT not in tags:
        registry.discard_undecided(name, str(version.version))
        return None
    previous = tags.get(PREVIOUS) or None
    reason = f"{tags.get(INTENT_REASON, '')} (finished after the run that decided it was interrupted)"
    plan = Decision(tags[INTENT], reason)  # type: ignore[arg-type]
    current = registry.alias_version(name, registry.CHAMPION)
    current_version = None if current is None else str(current.version)
    if plan.outcome == "promoted" and current_version not in (previous, str(version.version)):
        # The champion moved meanwhile; without the holdout this version cannot be compared again.
        plan = Decision("kept", f"interrupted before promotion, and the champion has since moved to v{current_version}")
        previous = current_version
    registered = Registered(str(version.version), version.run_id, f"models:/{name}/{version.version}")
    return apply_promotion(spec, registered, plan, previous, {}, lambda _: None, True)


@task(name="recover_interrupted", **IO_TASK)
def recover_interrupted(spec: PipelineSpec) -> list[str]:
    """Leave no version undecided: finish or delete what killed runs of this model left behind.
    Runs while holding the model's training slot, so no live run owns these versions."""
    done = []
    for version in registry.list_versions(spec.name):
        if DECISION in version.tags:
            continue
        outcome = finish_interrupted(spec, version)
        done.append(f"v{version.version} {'deleted' if outcome is None else outcome.outcome}")
    # Their MLflow runs too: a rerun that finds the finished version final never opens a run of
    # its own (which would end them), and no live run of this model exists while the slot is held.
    done.extend(f"run {run_id} ended FAILED" for run_id in registry.close_interrupted_runs(spec.name))
    return done


@task(name="check_champion_audit", **IO_TASK)
def check_champion_audit(name: str) -> str | None:
    """Why the champion alias has no audited Conveyor decision behind it (None when it has)."""
    return registry.unaudited_champion(name)


# Fault injection for the crash tests: a test replaces this with a function that raises.
CHECKPOINT: Callable[[str], None] = _no_checkpoint
