"""The deployments: `prefect deploy --all` for prefect.yaml, then one `train-<name>` per pipeline spec."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.stack.config import StackConfig, StackError
from app.stack.deploy_stamp import write_deploy_stamp
from app.stack.health import prefect_api_healthy, prefect_client, stack_auth_string
from app.stack.processes import log_tail
from app.stack.services import deploy_env, prefect_deploy_command
from app.stack.state import read_state

TRAINING_DEPLOYMENT = "training"
# Deployments of prefect.yaml whose `model` parameter is a model's name: their forms offer a choice.
MODEL_DEPLOYMENTS = ("scoring", "feedback", "monitoring", "rollback")
SPEC_TAG = "conveyor:spec"  # marks deployments generated from pipelines/*.yaml
TRIGGER_TITLE = "trigger (set by automations)"


@dataclass
class DeployReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verbs = (
            ("created", self.created),
            ("updated", self.updated),
            ("unchanged", self.unchanged),
            ("removed", self.removed),
        )
        return [f"{verb} {', '.join(names)}" for verb, names in verbs if names] + [
            f"error: {error}" for error in self.errors
        ]


def spec_deployment_name(spec_name: str) -> str:
    return f"train-{spec_name}"


def training_concurrency_name(spec_name: str) -> str:
    """The global concurrency limit the training flow holds for a model (one run at a time)."""
    return f"train-{spec_name}"


def run_prefect_deploy(config: StackConfig, api_url: str) -> None:
    """`prefect deploy --all --no-prompt` from the project root, against `api_url`."""
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.logs_dir / "deploy.log"
    with open(log_path, "wb") as out:
        result = subprocess.run(
            prefect_deploy_command(),
            cwd=config.root,
            env=deploy_env(config, api_url),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(
            f"`prefect deploy --all` failed (exit {result.returncode}); see {log_path}: {log_tail(log_path)}"
        )


def schema_with_choice(
    schema: dict[str, Any] | None, name: str, choices: list[str], description: str
) -> dict[str, Any]:
    """A copy of a flow's parameter schema where parameter `name` is a choice of `choices`."""
    schema = json.loads(json.dumps(schema or {}))
    prop = schema.get("properties", {}).get(name)
    if prop is not None and choices:
        prop["enum"] = choices
        prop.setdefault("description", description)
    return schema


def training_form(schema: dict[str, Any] | None, specs: list[str]) -> dict[str, Any]:
    """The training form: `spec` a choice of the current specs, `trigger` marked as the automations' field."""
    schema = schema_with_choice(schema, "spec", specs, "The pipeline spec (pipelines/<name>.yaml) to train.")
    trigger = schema.get("properties", {}).get("trigger")
    if trigger is not None:
        trigger["title"] = TRIGGER_TITLE
        trigger["description"] = "Leave empty when running by hand: the retraining automation sets it."
    return schema


def model_form(schema: dict[str, Any] | None, specs: list[str]) -> dict[str, Any]:
    return schema_with_choice(schema, "model", specs, "The model (its spec, pipelines/<name>.yaml).")


def spec_form(training_schema: dict[str, Any], spec_name: str) -> dict[str, Any]:
    """A `train-<name>` form: `spec` fixed to its model and nothing required, so Quick run needs no dialog."""
    schema = json.loads(json.dumps(training_schema))
    schema.get("properties", {}).get("spec", {}).update(enum=[spec_name], default=spec_name)
    schema.pop("required", None)
    return schema


def _load_specs(root: Path, report: DeployReport) -> dict[str, Any]:
    from conveyor.errors import SpecError
    from conveyor.spec import load_spec

    specs = {}
    for path in sorted([*(root / "pipelines").glob("*.yaml"), *(root / "pipelines").glob("*.yml")]):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            report.errors.append(str(exc))
            continue
        specs[spec.name] = spec
    return specs


def sync_spec_deployments(api_url: str, root: Path, auth_string: str | None = None) -> DeployReport:
    """Make one scheduled `train-<name>` deployment per spec under `<root>/pipelines`.

    Each copies the `training` deployment that `prefect deploy` made from prefect.yaml (flow,
    entrypoint, pull steps, pool, job variables), fixes `spec` to the model (the only choice its
    form offers, with nothing left to fill in), takes its schedule from the spec, and queues a
    second run of the model (limit 1, ENQUEUE). Deployments generated for specs that no longer
    exist are removed; the `spec` of `training` and the `model` of scoring, feedback and
    monitoring become a choice of the current specs.
    """
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, DeploymentFilterTags

    report = DeployReport()
    specs = _load_specs(root, report)
    names = sorted(specs)
    with prefect_client(api_url, auth_string=auth_string) as client:
        listed = client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[TRAINING_DEPLOYMENT, *MODEL_DEPLOYMENTS])
            )
        )
        by_name = {deployment.name: deployment for deployment in listed}
        template = by_name.get(TRAINING_DEPLOYMENT)
        if template is None:
            report.errors.append(f"no '{TRAINING_DEPLOYMENT}' deployment on {api_url}; run `prefect deploy --all`")
            return report
        for deployment in by_name.values():
            form = training_form if deployment.name == TRAINING_DEPLOYMENT else model_form
            schema = form(deployment.parameter_openapi_schema, names)
            if schema != deployment.parameter_openapi_schema:
                client.update_deployment(deployment.id, DeploymentUpdate(parameter_openapi_schema=schema))

        existing = {
            d.name: d
            for d in client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[SPEC_TAG]))
            )
        }
        training_schema = training_form(template.parameter_openapi_schema, names)
        for name, spec in specs.items():
            _sync_one(client, template, training_schema, spec, existing.get(spec_deployment_name(name)), report)
        # A spec with a typo must not silently delete its model's schedule: prune only when
        # every spec parsed.
        if not report.errors:
            wanted_names = {spec_deployment_name(name) for name in specs}
            for deployment_name, deployment in existing.items():
                if deployment_name not in wanted_names:
                    client.delete_deployment(deployment.id)
                    report.removed.append(deployment_name)
    return report


def _sync_one(
    client: Any, template: Any, training_schema: dict[str, Any], spec: Any, current: Any, report: DeployReport
) -> None:
    """Create or update `train-<name>` (unless nothing would change) and its concurrency limit."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate, GlobalConcurrencyLimitCreate
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound

    name = spec.name
    deployment_name = spec_deployment_name(name)
    schedule = CronSchedule(cron=spec.schedule.cron, timezone=spec.schedule.timezone) if spec.schedule.cron else None
    wanted: dict[str, Any] = dict(
        flow_id=template.flow_id,
        name=deployment_name,
        description=f"Train the {name} model (pipelines/{Path(spec.source or '').name}).",
        entrypoint=template.entrypoint,
        path=template.path,
        pull_steps=template.pull_steps,
        work_pool_name=template.work_pool_name,
        work_queue_name=template.work_queue_name,
        job_variables=template.job_variables,
        # Only its own model: the queue below is per model, so is the deployment.
        parameter_openapi_schema=spec_form(training_schema, name),
        enforce_parameter_schema=True,
        parameters={"spec": name},
        tags=sorted({*template.tags, SPEC_TAG, f"model:{name}"}),
        concurrency_limit=1,
        concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
    )
    if current is not None and _same_deployment(current, wanted, schedule):
        report.unchanged.append(deployment_name)
    else:
        schedules = [DeploymentScheduleCreate(schedule=schedule, active=True)] if schedule else []
        client.create_deployment(**wanted, schedules=schedules)  # an upsert on (flow, name)
        (report.updated if current is not None else report.created).append(deployment_name)
    limit_name = training_concurrency_name(name)
    try:
        client.read_global_concurrency_limit_by_name(limit_name)
    except ObjectNotFound:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit_name, limit=1))


def _same_deployment(current: Any, wanted: dict[str, Any], schedule: Any) -> bool:
    """Whether an upsert would change nothing (an upsert also drops future scheduled runs)."""
    schedules = [(s.schedule.cron, s.schedule.timezone) for s in current.schedules]
    wanted_schedules = [(schedule.cron, schedule.timezone)] if schedule else []
    options = current.concurrency_options
    return (
        current.flow_id == wanted["flow_id"]
        and current.entrypoint == wanted["entrypoint"]
        and current.pull_steps == wanted["pull_steps"]
        and current.work_pool_name == wanted["work_pool_name"]
        and current.job_variables == wanted["job_variables"]
        and current.parameters == wanted["parameters"]
        and current.parameter_openapi_schema == wanted["parameter_openapi_schema"]
        and sorted(current.tags) == wanted["tags"]
        and current.description == wanted["description"]
        and current.global_concurrency_limit is not None
        and current.global_concurrency_limit.limit == 1
        and options is not None
        and options.collision_strategy == wanted["concurrency_options"].collision_strategy
        and sorted(schedules) == sorted(wanted_schedules)
        and not current.paused
    )


def deploy(config: StackConfig, api_url: str | None = None, *, specs_only: bool = False) -> DeployReport:
    """`prefect deploy --all` then the per-spec deployments, against the stack or `api_url`."""
    if api_url is None:
        api_url = os.environ.get("PREFECT_API_URL")
    if api_url is None:
        state = read_state(config)
        if state is None:
            raise StackError("no Prefect API to deploy to: run `conveyor up` or set PREFECT_API_URL")
        api_url = state.prefect_api_url
        config = replace(config, auth=state.auth)  # the stack's own profile, whatever CONVEYOR_AUTH says now
    auth_string = stack_auth_string(config)  # else PREFECT_API_AUTH_STRING from the environment
    if not prefect_api_healthy(api_url, auth_string):
        raise StackError(f"the Prefect API at {api_url} does not answer")
    if not specs_only:
        run_prefect_deploy(config, api_url)
    report = sync_spec_deployments(api_url, config.root, auth_string)
    if not report.errors and not specs_only:
        write_deploy_stamp(config, api_url, report.created + report.updated + report.unchanged)
    return report
