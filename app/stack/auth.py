"""The hardened profile's secrets: generated at first `up`, kept in `.conveyor/auth.json` (mode 0600).

MLflow 3.17's basic-auth app ships no default admin password: it creates the admin user, the
first time its user store is empty, with MLFLOW_AUTH_ADMIN_PASSWORD, and ignores that setting
afterwards. Conveyor generates the password once, hands it to the server through its
environment (never a command line), and keeps it, with the user store, across `down` and `up`.
The Prefect server checks one shared string (PREFECT_SERVER_API_AUTH_STRING) on every API call
but its health probe; the worker, `prefect deploy` and the CLI send it as PREFECT_API_AUTH_STRING.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.stack.config import HOST, StackConfig, StackError

ADMIN_USERNAME = "admin"
PREFECT_USERNAME = "conveyor"  # the UI asks for "user:password"; any string would do


@dataclass(frozen=True)
class Credentials:
    """What the servers check and the clients send; repr never shows a secret."""

    mlflow_username: str
    mlflow_password: str = field(repr=False)
    prefect_auth_string: str = field(repr=False)  # PREFECT_SERVER_API_AUTH_STRING / PREFECT_API_AUTH_STRING
    flask_secret_key: str = field(repr=False)  # MLflow's basic-auth app signs its CSRF tokens with it

    @classmethod
    def generate(cls) -> Credentials:
        return cls(
            mlflow_username=ADMIN_USERNAME,
            mlflow_password=secrets.token_urlsafe(24),
            prefect_auth_string=f"{PREFECT_USERNAME}:{secrets.token_urlsafe(24)}",
            flask_secret_key=secrets.token_urlsafe(32),
        )


def write_owner_only(path: Path, text: str) -> None:
    """Write `text` to `path` readable and writable by the owner only, from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o600)  # whatever the umask did
    tmp.replace(path)


def owner_only(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def read_credentials(config: StackConfig) -> Credentials | None:
    """The stored credentials, or None before the first hardened `up`; refuse a file others can read."""
    path = config.auth_file
    if not path.is_file():
        return None
    if not owner_only(path):
        raise StackError(f"{path} is readable by others: `chmod 600 {path}`, and consider the secrets leaked")
    try:
        return Credentials(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise StackError(f"{path}: unreadable credentials ({type(exc).__name__}); restore it from a backup") from None


def stack_credentials(config: StackConfig) -> Credentials:
    """The credentials of a hardened stack that has been started before."""
    credentials = read_credentials(config)
    if credentials is None:
        raise StackError(f"no {config.auth_file}: start the hardened stack with `CONVEYOR_AUTH=1 conveyor up`")
    return credentials


def ensure_credentials(config: StackConfig) -> Credentials:
    """The stored credentials, generated and written (0600) at the first hardened `up`.

    A user store left without its credentials file cannot be logged into: say what to remove
    rather than start a server nobody can use.
    """
    # The stores under .conveyor (SQLite files, artifacts) bypass both servers: keep other users out.
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.state_dir.chmod(0o700)
    credentials = read_credentials(config)
    if credentials is None:
        if config.mlflow_auth_db.exists():
            raise StackError(
                f"{config.mlflow_auth_db} exists but {config.auth_file} is gone, so its admin password is "
                f"lost: restore {config.auth_file}, or remove {config.mlflow_auth_db} to start with a new one"
            )
        credentials = Credentials.generate()
        write_owner_only(config.auth_file, json.dumps(asdict(credentials), indent=2) + "\n")
    write_owner_only(config.mlflow_auth_config, basic_auth_ini(config))
    write_owner_only(config.auth_env_file, auth_env_text(config, credentials))
    return credentials


def basic_auth_ini(config: StackConfig) -> str:
    """MLflow's basic-auth settings: the user store under .conveyor, users see nothing unless granted."""
    return (
        "[mlflow]\n"
        # Users an admin adds later see nothing until granted (MLflow's default is READ for all).
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{config.mlflow_auth_db}\n"
        f"admin_username = {ADMIN_USERNAME}\n"
        # The password comes from MLFLOW_AUTH_ADMIN_PASSWORD in the server's environment.
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # A checked credential is trusted for 60 s instead of hashed again (PBKDF2, tens of ms)
        # on every request: a training run through the worker took 21 s, 11 s with the cache.
        # The server runs one worker, so a password change through the API takes effect at once.
        "auth_cache_ttl_seconds = 60\n"
    )


def client_env(config: StackConfig, credentials: Credentials) -> dict[str, str]:
    """What a client of the hardened stack needs: the addresses and the credentials."""
    return {
        "PREFECT_API_URL": config.prefect_api_url,
        "PREFECT_API_AUTH_STRING": credentials.prefect_auth_string,
        "MLFLOW_TRACKING_URI": config.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": credentials.mlflow_username,
        "MLFLOW_TRACKING_PASSWORD": credentials.mlflow_password,
    }


def auth_env_text(config: StackConfig, credentials: Credentials) -> str:
    """`export` lines for `source .conveyor/auth.env`."""
    lines = [f"export {key}={shlex.quote(value)}" for key, value in client_env(config, credentials).items()]
    return "# Written by `CONVEYOR_AUTH=1 conveyor up`; readable by you only. Use: source .conveyor/auth.env\n" + (
        "\n".join(lines) + "\n"
    )


def allowed_hosts(port: int) -> str:
    """The Host headers MLflow accepts (DNS rebinding): this machine's loopback names with the port."""
    return ",".join(f"{host}:{port}" for host in dict.fromkeys((HOST, "localhost")))


def allowed_origins(port: int) -> str:
    """The browser origins MLflow answers (CORS): its own UI only, not any page on localhost."""
    return ",".join(f"http://{host}:{port}" for host in dict.fromkeys((HOST, "localhost")))
