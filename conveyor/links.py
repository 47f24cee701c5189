"""Links into the MLflow UI for Prefect artifacts: markdown links when tracking is an http(s)
server a person can open, else the plain identifiers (a run id, a `models:/` URI)."""

from __future__ import annotations

from urllib.parse import quote


def ui_base(tracking_uri: str) -> str | None:
    """The MLflow UI's address when the tracking URI is an http(s) server, else None."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return None


def run_link(tracking_uri: str, experiment_id: str, run_id: str, artifact_path: str | None = None) -> str:
    """A run (opened on one of its artifacts when given) as markdown."""
    base = ui_base(tracking_uri)
    if base is None:
        where = f", artifact `{artifact_path}`" if artifact_path else ""
        return f"MLflow run `{run_id}`{where}"
    url = f"{base}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"
    if artifact_path:
        return f"[{artifact_path} in MLflow run {run_id[:8]}]({url}/artifacts/{quote(artifact_path)})"
    return f"[MLflow run {run_id[:8]}]({url})"


def model_version_link(tracking_uri: str, name: str, version: str) -> str:
    """A registered model version as markdown."""
    base = ui_base(tracking_uri)
    if base is None:
        return f"model `models:/{name}/{version}`"
    return f"[model {name} v{version}]({base}/#/models/{quote(name)}/versions/{quote(version)})"


def prefect_flow_run_url(flow_run_id: str) -> str | None:
    """The flow run's page in the Prefect UI, when a Prefect server (not a temporary one) is in use."""
    from prefect.settings import get_current_settings

    from conveyor.locks import prefect_server_url

    api = prefect_server_url()  # None for a command's own temporary server: its pages die with it
    if not flow_run_id or api is None:
        return None
    ui = get_current_settings().ui_url or api.removesuffix("/api")
    return f"{str(ui).rstrip('/')}/runs/flow-run/{quote(flow_run_id)}"
