"""What a training run tells a person: its result, one line for the run's state, and a Prefect
artifact with the metrics, the comparison with the champion and the decision."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from conveyor import links, registry
from conveyor.orchestration import IO_TASK
from conveyor.spec import DEFAULT_METRIC, PipelineSpec


@dataclass(frozen=True)
class TrainingResult:
    model: str
    version: str | None
    outcome: str  # promoted, kept, rejected, unchanged, skipped
    reason: str
    metric: str | None = None
    value: float | None = None
    champion: str | None = None
    compared_with: str | None = None
    run_id: str | None = None
    reused: bool = False
    adopted: bool = False

    @property
    def message(self) -> str:
        """The one line a person sees in the runs list, the run header and the CLI."""
        if self.outcome == "skipped":
            return f"skipped: {self.reason}"
        if self.reused:
            return f"nothing to do: {self.reason}"
        value = "" if self.value is None or self.metric is None else f" ({self.metric} {self.value:.4g})"
        return f"{self.model} v{self.version} {self.outcome}{value}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"message": self.message}


def artifact_key(kind: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return f"{kind}-" + "".join(char if char.isalnum() else "-" for char in name.lower())


def summary_markdown(
    spec: PipelineSpec, result: TrainingResult, metrics: dict[str, float], champion: dict[str, float] | None
) -> str:
    compared = f"champion v{result.compared_with}" if result.compared_with else "champion (none)"

    def cell(name: str) -> str:
        return "-" if not champion or name not in champion else f"{champion[name]:.4f}"

    rows = "\n".join(f"| {name} | {value:.4f} | {cell(name)} |" for name, value in sorted(metrics.items()))
    uri = registry.client().tracking_uri
    experiment = registry.client().get_run(result.run_id).info.experiment_id if result.run_id else ""
    run = links.run_link(uri, experiment, result.run_id or "")
    model = links.model_version_link(uri, spec.name, result.version or "?")
    adopted = (
        "\n\nThis run finished the job of an interrupted run (its registered version was adopted)." * result.adopted
    )
    return f"""# {spec.name} v{result.version}: **{result.outcome}**

{result.reason}{adopted}

| metric | candidate v{result.version} | {compared} on the same holdout |
| --- | --- | --- |
{rows}

{run}; {model}; primary metric {spec.primary_metric}; champion now: v{result.champion or "none"}.
"""


@task(name="publish_summary", **IO_TASK)
def publish_summary(
    spec: PipelineSpec, result: TrainingResult, metrics: dict[str, float], champion: dict[str, float] | None
) -> None:
    create_markdown_artifact(
        summary_markdown(spec, result, metrics, champion),
        key=artifact_key("training", spec.name),
        description=result.message[:500],
    )


@task(name="publish_unchanged", **IO_TASK)
def publish_unchanged(spec: PipelineSpec, existing: Any) -> TrainingResult:
    """Report the version already trained from the same data, contract, spec and code; change nothing."""
    task_type = existing.tags.get("conveyor.task", "binary")
    metric = spec.evaluation.metric or DEFAULT_METRIC[task_type]
    champion = registry.alias_version(spec.name, registry.CHAMPION)
    outcome = existing.tags.get("conveyor.decision", "kept")
    result = TrainingResult(
        model=spec.name,
        version=str(existing.version),
        outcome=outcome,
        reason=f"same data, contract, spec and code as v{existing.version} ({outcome})",
        metric=metric,
        value=float(existing.tags.get(f"conveyor.metric.{metric}", "nan")),
        champion=None if champion is None else str(champion.version),
        run_id=existing.run_id,
        reused=True,
    )
    create_markdown_artifact(
        f"# {spec.name}: nothing to do\n\n{result.message}.\n\n{existing.tags.get('conveyor.decision_reason', '')}",
        key=artifact_key("training", spec.name),
        description=result.message[:500],
    )
    return result


def skipped(spec: PipelineSpec, refusal: str) -> TrainingResult:
    """A triggered run the retraining policy declined, with an artifact that says why."""
    result = TrainingResult(model=spec.name, version=None, outcome="skipped", reason=refusal)
    create_markdown_artifact(
        f"# {spec.name}: skipped\n\n{refusal}.\n\nSee `monitoring.retrain_on`, `cooldown_minutes` and "
        "`cooldown_on` in the spec.",
        key=artifact_key("training", spec.name),
        description=result.message[:500],
    )
    return result
