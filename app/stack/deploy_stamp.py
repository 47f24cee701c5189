"""What was last deployed where, so that `up` skips an unchanged `prefect deploy`.

`prefect deploy` costs seconds of CPU importing the flows: `up` skips it when prefect.yaml, its
entrypoint files and Prefect are unchanged and the server still has every deployment. A process
worker runs the checkout's code, so other code changes need no deploy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

from app.stack.config import StackConfig
from app.stack.health import prefect_client, stack_auth_string


def _digest_files(root: Path, files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file.read_bytes() if file.is_file() else b"<missing>")
    return digest.hexdigest()


def fingerprint(root: Path) -> dict[str, str]:
    """Prefect's version, prefect.yaml and its entrypoint files, the specs, the deployment names, this code."""
    import yaml

    prefect_yaml = root / "prefect.yaml"
    files = [prefect_yaml]
    try:
        raw = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        raw = {}
    for item in raw.get("deployments") or []:
        entrypoint = str(item.get("entrypoint") or "")
        if ":" in entrypoint:
            files.append(root / entrypoint.rsplit(":", 1)[0])
    specs = sorted([*(root / "pipelines").glob("*.yaml"), *(root / "pipelines").glob("*.yml")])
    return {
        "prefect": version("prefect"),
        "prefect_yaml": _digest_files(root, files),
        "specs": _digest_files(root, specs),
        "deployments": ",".join(sorted(str(d.get("name")) for d in raw.get("deployments") or [])),
        # How deployments are made (their forms, their limits): a change redeploys once.
        "deploy_code": hashlib.sha256((Path(__file__).parent / "deploy.py").read_bytes()).hexdigest(),
    }


def write_deploy_stamp(config: StackConfig, api_url: str, spec_deployments: list[str]) -> None:
    stamp = {"api_url": api_url, **fingerprint(config.root), "spec_deployments": sorted(spec_deployments)}
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "deployed.json").write_text(json.dumps(stamp, indent=2) + "\n")


def deployments_current(config: StackConfig, api_url: str) -> tuple[bool, bool]:
    """(prefect.yaml's deployments current, per-spec deployments current) on this server."""
    import httpx
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    try:
        stamp = json.loads((config.state_dir / "deployed.json").read_text())
    except (OSError, ValueError):
        return False, False
    now = {"api_url": api_url, **fingerprint(config.root)}
    if any(stamp.get(key) != value for key, value in now.items() if key != "specs"):
        return False, False
    yaml_names = {name for name in now["deployments"].split(",") if name}
    expected = yaml_names | set(stamp.get("spec_deployments", []))
    try:
        with prefect_client(api_url, auth_string=stack_auth_string(config)) as client:
            found = client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=sorted(expected))),
                limit=200,
            )
    except httpx.HTTPError:
        return False, False
    present = {deployment.name for deployment in found}
    yaml_current = yaml_names <= present
    return yaml_current, yaml_current and stamp.get("specs") == now["specs"] and expected <= present
