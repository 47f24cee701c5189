"""The PostgreSQL profile: one database for Prefect, one for MLflow, created on first `up` (psycopg 3)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path

from app.stack.config import StackConfig, StackError, pg_conninfo


def ensure_databases(base_url: str, names: Iterable[str]) -> list[str]:
    """Create the named databases if missing; return the ones created now."""
    import psycopg
    from psycopg import sql

    created = []
    try:
        with psycopg.connect(pg_conninfo(base_url), autocommit=True, connect_timeout=10) as conn:
            for name in names:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                    continue
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created.append(name)
                except psycopg.errors.DuplicateDatabase:
                    pass  # another `up` created it between our check and our CREATE
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StackError(f"CONVEYOR_DATABASE_URL: cannot connect to PostgreSQL: {first_line}") from None
    return created


def drop_databases(base_url: str, names: Iterable[str]) -> None:
    """Drop the named databases, closing their connections first."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_conninfo(base_url), autocommit=True, connect_timeout=10) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def mlflow_heads() -> set[str]:
    """The head revisions of the installed MLflow's migrations, read from its alembic files.

    Parsed rather than imported: alembic's ScriptDirectory imports every revision (seconds).
    """
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return set()
    versions = Path(spec.submodule_search_locations[0]) / "store" / "db_migrations" / "versions"
    revisions: set[str] = set()
    parents: set[str] = set()
    for file in versions.glob("*.py"):
        text = file.read_text(encoding="utf-8")
        if revision := re.search(r"^revision\s*=\s*[\"']([0-9a-f]+)[\"']", text, re.M):
            revisions.add(revision.group(1))
        if down := re.search(r"^down_revision\s*=\s*(.+)$", text, re.M):
            parents.update(re.findall(r"[\"']([0-9a-f]+)[\"']", down.group(1)))
    return revisions - parents


def mlflow_schema_current(config: StackConfig) -> bool:
    """Whether the MLflow database is at the installed MLflow's schema (no upgrade needed)."""
    import psycopg

    heads = mlflow_heads()
    if not heads or not config.database_url:
        return False
    try:
        with psycopg.connect(config.database_conninfo(config.database_names[1]), connect_timeout=10) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except psycopg.Error:
        return False  # no tables yet, or unreadable: let `mlflow db upgrade` decide
    return {row[0] for row in rows} == heads
