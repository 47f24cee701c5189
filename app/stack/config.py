"""Where the stack keeps its state, which ports it listens on and which databases it uses."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor import settings
from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

HOST = "127.0.0.1"
POOL = "conveyor"
WORKER_NAME = "conveyor-worker"
SERVICES = ("prefect-server", "mlflow-server", "worker")
# The landing page of MLflow's classic (model training) UI; MLflow 3 opens in GenAI mode
# otherwise, and offers no server setting for it (the UI keeps the choice per browser).
MLFLOW_CLASSIC_VIEW = "/#/experiments?workflowType=machine_learning"


class StackError(ConveyorError):
    """The stack cannot start, stop or be reached; the message names the service and its log."""

    exit_code = 5


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and which ports and databases it uses."""

    root: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    database_url: str | None = None
    database_prefix: str = "conveyor"
    auth: bool = False  # the hardened profile: MLflow basic-auth, a Prefect API auth string
    dask_workers: int = 0  # CONVEYOR_DASK_WORKERS: a `dask scheduler` and this many `dask worker`s
    s3: bool = False  # CONVEYOR_S3: SeaweedFS's S3 gateway holds MLflow's artifacts
    # Free ports chosen by `up` (app/stack/scaled.py), recorded in the stack's state.
    dask_port: int | None = None
    dask_dashboard_port: int | None = None
    s3_port: int | None = None

    @classmethod
    def from_env(cls, root: Path | None = None) -> StackConfig:
        """Read CONVEYOR_PREFECT_PORT, CONVEYOR_MLFLOW_PORT, CONVEYOR_DATABASE_URL/_PREFIX, CONVEYOR_AUTH,
        CONVEYOR_DASK_WORKERS and CONVEYOR_S3."""
        prefix = os.environ.get("CONVEYOR_DATABASE_PREFIX", "conveyor")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", prefix):
            raise StackError(f"CONVEYOR_DATABASE_PREFIX={prefix!r}: use lower-case letters, digits and _")
        database_url = os.environ.get("CONVEYOR_DATABASE_URL") or None
        if database_url:
            pg_url(database_url)  # refuse a malformed URL now, not in a server's log
        return cls(
            root=(root or settings.project_root()).resolve(),
            prefect_port=port_from_env("CONVEYOR_PREFECT_PORT", 4200),
            mlflow_port=port_from_env("CONVEYOR_MLFLOW_PORT", 5000),
            database_url=database_url,
            database_prefix=prefix,
            auth=flag_from_env("CONVEYOR_AUTH"),
            dask_workers=count_from_env("CONVEYOR_DASK_WORKERS", 0, most=64),
            s3=flag_from_env("CONVEYOR_S3"),
        )

    @property
    def state_dir(self) -> Path:
        return self.root / ".conveyor"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def auth_file(self) -> Path:
        """The hardened profile's credentials (JSON), readable by the owner only."""
        return self.state_dir / "auth.json"

    @property
    def auth_env_file(self) -> Path:
        """`export` lines for a shell (`source` it): the addresses and the credentials, owner only."""
        return self.state_dir / "auth.env"

    @property
    def mlflow_auth_config(self) -> Path:
        """MLflow's basic-auth configuration (MLFLOW_AUTH_CONFIG_PATH); it holds no secret."""
        return self.state_dir / "basic_auth.ini"

    @property
    def mlflow_auth_db(self) -> Path:
        """MLflow's user store (SQLite, on either profile): its users and their password hashes."""
        return self.state_dir / "mlflow_auth.db"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_ui_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def dask_address(self) -> str | None:
        """The scheduler's address the Prefect worker's flow runs get as CONVEYOR_DASK_ADDRESS."""
        return f"tcp://{HOST}:{self.dask_port}" if self.dask_port else None

    @property
    def dask_dashboard_url(self) -> str | None:
        return f"http://{HOST}:{self.dask_dashboard_port}/status" if self.dask_dashboard_port else None

    @property
    def s3_endpoint_url(self) -> str | None:
        return f"http://{HOST}:{self.s3_port}" if self.s3_port else None

    @property
    def seaweedfs_dir(self) -> Path:
        """SeaweedFS's volumes and metadata: the S3 store's bytes, kept across `down` and `up`."""
        return self.state_dir / "seaweedfs"

    @property
    def s3_identity_file(self) -> Path:
        """SeaweedFS's S3 identity (`weed -s3.config`): the access key and secret, owner only."""
        return self.state_dir / "s3.json"

    @property
    def s3_env_file(self) -> Path:
        """`export` lines for a shell: the S3 endpoint and credentials, owner only."""
        return self.state_dir / "s3.env"

    @property
    def profile(self) -> str:
        return "postgresql" if self.database_url else "sqlite"

    @property
    def database_names(self) -> tuple[str, str]:
        """(Prefect database, MLflow database) on the PostgreSQL profile."""
        return f"{self.database_prefix}_prefect", f"{self.database_prefix}_mlflow"

    def prefect_database_url(self, *, hide_password: bool = False) -> str:
        """Prefect's database: SQLite under .conveyor/prefect, or PostgreSQL through asyncpg."""
        if not self.database_url:
            return f"sqlite+aiosqlite:///{self.prefect_home / 'prefect.db'}"
        url = pg_url(self.database_url).set(drivername="postgresql+asyncpg", database=self.database_names[0])
        return url.render_as_string(hide_password=hide_password)

    def mlflow_backend_uri(self, *, hide_password: bool = False) -> str:
        """The SQLite file the embedded default uses, or the MLflow database through psycopg 3."""
        if not self.database_url:
            return f"sqlite:///{self.state_dir / 'mlflow.db'}"
        # A bare postgresql:// would make SQLAlchemy load psycopg2: name the one driver we ship.
        url = pg_url(self.database_url).set(drivername="postgresql+psycopg", database=self.database_names[1])
        return url.render_as_string(hide_password=hide_password)

    @property
    def database_password(self) -> str | None:
        """The password in CONVEYOR_DATABASE_URL, if any: handed to servers only through their environment."""
        return pg_url(self.database_url).password if self.database_url else None

    def database_conninfo(self, database: str | None = None) -> str:
        """A libpq URI for psycopg: `database`, else the one the URL names, else `postgres`."""
        if not self.database_url:
            raise StackError("no CONVEYOR_DATABASE_URL: the SQLite profile has no PostgreSQL server")
        return pg_conninfo(self.database_url, database)


def flag_from_env(name: str) -> bool:
    """An on/off setting: 1, true, yes, on or 0, false, no, off, empty (unset is off)."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise StackError(f"{name}={raw!r}: use 1 (on) or 0 (off)")


def count_from_env(name: str, default: int, *, most: int) -> int:
    """A whole number from 0 to `most` (unset or empty is `default`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > most:
        raise StackError(f"{name}={raw!r}: use a whole number from 0 to {most}")
    return int(raw)


def port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{name}={raw!r} is not a TCP port number")
    return int(raw)


def pg_url(raw: str) -> URL:
    """The PostgreSQL URL as SQLAlchemy parses it; errors never repeat the URL (it may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except ArgumentError:
        raise StackError("CONVEYOR_DATABASE_URL is not a database URL (postgresql://user@host:port)") from None
    if url.get_backend_name() != "postgresql":
        raise StackError(f"CONVEYOR_DATABASE_URL must be postgresql://user@host:port, got {url.drivername}://...")
    return url


def without_password(uri: str) -> str:
    """The database URI with no password in it (libpq then reads PGPASSWORD from the environment)."""
    from sqlalchemy.engine import URL, make_url

    url = make_url(uri)  # URL.set(password=None) would keep it: None means "unchanged" there
    bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)
    return bare.render_as_string(hide_password=False)


def pg_conninfo(raw: str, database: str | None = None) -> str:
    """A libpq URI for psycopg: `database`, else the one the URL names, else `postgres`."""
    url = pg_url(raw)
    url = url.set(drivername="postgresql", database=database or url.database or "postgres")
    return url.render_as_string(hide_password=False)


_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<password>[^@/\s]+)@", re.I)


def mask_passwords(text: str) -> str:
    """`scheme://user:secret@host` becomes `scheme://user:***@host`, wherever it appears in `text`."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)
