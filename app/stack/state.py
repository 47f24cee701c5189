"""What `conveyor up` started, kept in `.conveyor/stack.json` so that `down` stops exactly that."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.stack.config import StackConfig, StackError
from conveyor.process_identity import recorded_start


@dataclass
class Service:
    """One process tree the stack started: its pid and its start in seconds since boot (pids get
    reused; the start since boot, unlike a wall-clock creation time, never moves with the clock)."""

    name: str
    pid: int
    started: float
    log: str
    cmd: list[str]
    port: int | None = None
    url: str | None = None


@dataclass
class StackState:
    """What `.conveyor/stack.json` holds: no secrets (database URLs are stored without password)."""

    root: str
    profile: str
    prefect_ui_url: str
    prefect_api_url: str
    mlflow_url: str
    started_at: float
    services: dict[str, Service] = field(default_factory=dict)
    ready: bool = False
    databases: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds from start to each ready
    auth: bool = False  # the hardened profile (its secrets are in .conveyor/auth.json, never here)
    dask_address: str | None = None  # CONVEYOR_DASK_WORKERS: the scheduler the flow runs use
    dask_dashboard_url: str | None = None
    s3_endpoint_url: str | None = None  # CONVEYOR_S3: SeaweedFS's S3 gateway (credentials in .conveyor/s3.env)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            services = {name: Service(**_upgraded(svc)) for name, svc in raw.pop("services").items()}
            return cls(**raw, services=services)
        except (ValueError, TypeError, KeyError) as exc:
            raise StackError(f"{path}: unreadable stack state ({exc}); remove it by hand") from None


def _upgraded(service: dict[str, Any]) -> dict[str, Any]:
    """A service as recorded now (its start since boot), whichever format recorded it."""
    started = recorded_start(service)
    kept = {key: value for key, value in service.items() if key not in ("create_time", "start_ticks")}
    return {**kept, "started": started}


def read_state(config: StackConfig) -> StackState | None:
    return StackState.load(config.stack_file)
