"""The scaled stack's extra services: a Dask cluster and an S3 store (SeaweedFS).

`CONVEYOR_DASK_WORKERS=N conveyor up` also starts `dask scheduler` and N `dask worker`s on
127.0.0.1 (free ports, one thread each, OpenMP at one thread). The Prefect worker's flow runs get
CONVEYOR_DASK_ADDRESS, so their fan-outs run on this cluster; the Dask workers run those tasks
with the Prefect worker's environment (tracking URI, credentials, the project on PYTHONPATH).

`CONVEYOR_S3=1 conveyor up` also starts SeaweedFS (`weed server -s3`) with one S3 identity,
generated at the first start and kept in `.conveyor/s3.json` (owner only), and creates the bucket
BUCKET. The MLflow server stores artifacts there (clients reach them as `mlflow-artifacts:/`
through the server); flow runs and Dask workers get the endpoint and the credentials as
AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which s3fs and boto3 read, so
`s3://` data paths and prediction logs work.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import secrets
import shlex
from dataclasses import dataclass, field, replace
from typing import Any

from app.stack.auth import owner_only, write_owner_only
from app.stack.config import HOST, StackConfig, StackError
from app.stack.processes import bin_path
from conveyor.ports import free_port

BUCKET = "conveyor"
ARTIFACTS_DESTINATION = f"s3://{BUCKET}/mlflow-artifacts"
SEAWEEDFS = "seaweedfs"
DASK_SCHEDULER = "dask-scheduler"
DASK_WORKER = "dask-worker"
REGION = "us-east-1"  # SeaweedFS accepts any; botocore needs one to sign requests
# On SIGTERM SeaweedFS's filer waits 15 s for open gRPC streams (its own S3 gateway's) before it
# stops; what it was sent is on disk already, so `down` waits this long and then kills it.
SEAWEEDFS_STOP_GRACE = 3.0
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def with_ports(config: StackConfig) -> StackConfig:
    """The config with free ports for the Dask scheduler, its dashboard and the S3 gateway, as wanted."""
    return replace(
        config,
        dask_port=free_port(HOST) if config.dask_workers else None,
        dask_dashboard_port=free_port(HOST) if config.dask_workers else None,
        s3_port=free_port(HOST) if config.s3 else None,
    )


def from_state(config: StackConfig, state: Any) -> StackConfig:
    """The config of a running stack: its profile and ports as `up` recorded them."""
    services = state.services
    scheduler, store = services.get(DASK_SCHEDULER), services.get(SEAWEEDFS)
    dashboard = state.dask_dashboard_url
    return replace(
        config,
        auth=state.auth,
        dask_workers=sum(name.startswith(DASK_WORKER) for name in services),
        dask_port=scheduler.port if scheduler else None,
        dask_dashboard_port=int(dashboard.split(":")[2].split("/")[0]) if dashboard else None,
        s3=store is not None,
        s3_port=store.port if store else None,
    )


def dask_worker_names(config: StackConfig) -> list[str]:
    return [f"{DASK_WORKER}-{number}" for number in range(1, config.dask_workers + 1)]


def dashboard_url(config: StackConfig) -> str | None:
    """The scheduler's web pages: the bokeh dashboard when bokeh is installed, else the info pages."""
    if not config.dask_dashboard_port:
        return None
    page = "status" if importlib.util.find_spec("bokeh") else "info/main/workers.html"
    return f"http://{HOST}:{config.dask_dashboard_port}/{page}"


def extra_commands(config: StackConfig) -> dict[str, list[str]]:
    """The Dask and SeaweedFS command lines this config asks for (none by default)."""
    commands: dict[str, list[str]] = {}
    if config.dask_workers:
        dask = bin_path("dask")
        commands[DASK_SCHEDULER] = [
            dask, "scheduler", "--host", HOST, "--port", str(config.dask_port),
            "--dashboard-address", f"{HOST}:{config.dask_dashboard_port}",
        ]  # fmt: skip
        for name in dask_worker_names(config):
            commands[name] = [
                dask, "worker", str(config.dask_address), "--host", HOST, "--nthreads", "1", "--name", name,
                "--no-dashboard", "--local-directory", str(config.state_dir / "dask"),
            ]  # fmt: skip
    if config.s3:
        # Every internal port is a free one too: SeaweedFS's defaults (9333, 8080, 8888, ...) may be taken.
        ports = {
            name: str(free_port(HOST))
            for name in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                         "filer.port", "filer.port.grpc", "s3.port.grpc")
        }  # fmt: skip
        commands[SEAWEEDFS] = [
            bin_path("weed"), "server", "-s3", f"-ip={HOST}", f"-ip.bind={HOST}", f"-dir={config.seaweedfs_dir}",
            *(f"-{name}={port}" for name, port in ports.items()),
            f"-s3.port={config.s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config.s3_identity_file}", "-volume.preStopSeconds=0",
        ]  # fmt: skip
    return commands


@dataclass(frozen=True)
class S3Identity:
    """The one S3 identity SeaweedFS accepts; repr never shows the secret."""

    access_key: str
    secret_key: str = field(repr=False)


def _identity_config(identity: S3Identity) -> str:
    """SeaweedFS's `-s3.config` file: one identity with every action on every bucket."""
    entry = {
        "name": "conveyor",
        "credentials": [{"accessKey": identity.access_key, "secretKey": identity.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [entry]}, indent=2) + "\n"


def s3_identity(config: StackConfig) -> S3Identity:
    """The stored identity; refuse a file others can read."""
    path = config.s3_identity_file
    if not path.is_file():
        raise StackError(f"no {path}: start the stack with `CONVEYOR_S3=1 conveyor up`")
    if not owner_only(path):
        raise StackError(f"{path} is readable by others: `chmod 600 {path}`, and consider the key leaked")
    try:
        (credentials,) = json.loads(path.read_text(encoding="utf-8"))["identities"][0]["credentials"]
        return S3Identity(credentials["accessKey"], credentials["secretKey"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise StackError(f"{path}: not an S3 identity file; remove it to have `up` write a new one") from None


def ensure_s3_identity(config: StackConfig) -> S3Identity:
    """The identity, generated and written (0600) at the first S3 start; the shell file for clients."""
    if not config.s3_identity_file.is_file():
        identity = S3Identity(secrets.token_hex(10).upper(), secrets.token_urlsafe(30))
        write_owner_only(config.s3_identity_file, _identity_config(identity))
    identity = s3_identity(config)
    lines = [f"export {key}={shlex.quote(value)}" for key, value in s3_client_env(config, identity).items()]
    header = "# Written by `CONVEYOR_S3=1 conveyor up`; readable by you only. Use: source .conveyor/s3.env\n"
    write_owner_only(config.s3_env_file, header + "\n".join(lines) + "\n")
    return identity


def s3_client_env(config: StackConfig, identity: S3Identity | None = None) -> dict[str, str]:
    """What an S3 client (boto3, s3fs, pyarrow through fsspec) needs to reach the stack's store."""
    identity = identity or s3_identity(config)
    return {
        "AWS_ENDPOINT_URL": str(config.s3_endpoint_url),
        "AWS_ACCESS_KEY_ID": identity.access_key,
        "AWS_SECRET_ACCESS_KEY": identity.secret_key,
        "AWS_DEFAULT_REGION": REGION,
    }


def s3_client(config: StackConfig) -> Any:
    import boto3
    from botocore.config import Config

    env = s3_client_env(config)
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )


def _answers(url: str) -> bool:
    import httpx

    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


def ensure_bucket(config: StackConfig) -> bool:
    """Create BUCKET once the gateway answers; False while SeaweedFS is still starting."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not _answers(str(config.s3_endpoint_url)):
        return False
    try:
        s3_client(config).create_bucket(Bucket=BUCKET)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return True
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            raise StackError(f"SeaweedFS refuses the identity in {config.s3_identity_file}: {code}") from None
        return False  # its master or volume server is not up yet
    except BotoCoreError:
        return False
    return True


def s3_healthy(config: StackConfig) -> bool:
    """The gateway answers and the bucket is there for the stored identity."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not config.s3_port or not _answers(str(config.s3_endpoint_url)):
        return False
    try:
        s3_client(config).head_bucket(Bucket=BUCKET)
    except (BotoCoreError, ClientError, StackError):
        return False
    return True


def dask_scheduler_healthy(config: StackConfig) -> bool:
    import httpx

    if not config.dask_dashboard_port:
        return False
    try:
        return httpx.get(f"http://{HOST}:{config.dask_dashboard_port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def dask_workers_connected(config: StackConfig) -> set[str]:
    """The names of the workers connected to the scheduler (empty while it does not answer)."""
    import httpx

    if not config.dask_dashboard_port:
        return set()
    with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
        identity = httpx.get(f"http://{HOST}:{config.dask_dashboard_port}/json/identity.json", timeout=2).json()
        return {str(worker.get("name")) for worker in identity.get("workers", {}).values()}
    return set()


def check(name: str) -> tuple[Any, str] | None:
    """(health check, detail template) for a service of the scaled stack, None for the others."""
    if name == DASK_SCHEDULER:
        return dask_scheduler_healthy, "scheduler {url}"
    if name.startswith(DASK_WORKER):
        return (lambda config: name in dask_workers_connected(config)), "worker of {url}"
    if name == SEAWEEDFS:
        return s3_healthy, f"S3 {{url}}, bucket {BUCKET}"
    return None
