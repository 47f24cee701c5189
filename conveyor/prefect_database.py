"""A new Prefect database starts as a copy of an empty one, made once per Prefect version at install.

A Prefect server on a SQLite database file that does not exist yet creates it: Prefect's 116
migrations, then its block types, about 5 s and 5 CPU-seconds here before it answers. That is the
embedded mode's first command in every Prefect home, every new stack, and every new project the
tests make. The result is the same file each time, so `make install` makes it once
(`python -m conveyor.prefect_database`: a temporary server of the installed Prefect on an empty
database in a scratch folder), and a server about to start on a SQLite file that does not exist
gets a copy of it. Prefect's own start-up still runs: its migrations find the copy at their head
and do nothing, and its block registration finds its types there.

Only a missing file is ever written, never over another: the copy is linked into place, so a
database that appears meanwhile (another command starting) is left alone. A Prefect upgraded
without `make install` has no template of its version, and its server creates the database as
before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

# What a Prefect server writes to a new database before its first request: the migrations' mark
# and the block types. A template holding anything else (a run, a secret's key) is refused.
TEMPLATE_TABLES = frozenset({"alembic_version", "block_type", "block_schema", "block_schema_reference"})
DATABASE_URL = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
# The migrations took 11 s here on a quiet machine; an install on a loaded one must not fail at
# Prefect's 20 s start-up timeout.
BUILD_TIMEOUT_S = 300.0


def template_path() -> Path:
    """Where `make install` keeps the template of the installed Prefect: inside the environment."""
    return Path(sys.prefix) / "share" / "conveyor" / f"prefect-{version('prefect')}.db"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (`sqlite+aiosqlite:////abs/path.db`); None for another
    database or one in memory. Read by hand: importing SQLAlchemy for it would delay the server's
    start by about 0.2 s."""
    scheme, _, rest = url.partition("://")
    name = rest[1:].split("?", 1)[0] if rest.startswith("/") else ""
    if not scheme.startswith("sqlite") or name in ("", ":memory:") or name.startswith("file:"):
        return None
    return Path(name)


def seed(url: str, template: Path | None = None) -> bool:
    """Copy the template to the database file of `url` when there is no such file yet.

    True when it copied. Nothing happens for another database, a missing template, or a file that
    exists (its write-ahead log or journal included): that is a database, never overwritten.
    """
    target = sqlite_file(url)
    template = template or template_path()
    if target is None or not template.is_file():
        return False
    if any(Path(f"{target}{suffix}").exists() for suffix in ("", "-wal", "-shm", "-journal")):
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".seed")
    except OSError:  # a folder that cannot be written: Prefect's server will say so in its own words
        return False
    os.close(fd)
    try:
        shutil.copyfile(template, scratch)
        os.link(scratch, target)  # fails, rather than replaces, when a database appeared meanwhile
    except OSError:  # that database, a full disk, a file system without hard links: Prefect creates it
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
    return True


def exists(url: str) -> bool:
    """Whether `url` is a SQLite database whose file exists."""
    target = sqlite_file(url)
    return target is not None and target.is_file()


def tables_with_rows(database: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name for name in names if db.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone()}


def check_new(database: Path) -> None:
    """Refuse a database that holds anything but a new one's schema and block types, or lacks them."""
    rows = tables_with_rows(database)
    if unexpected := rows - TEMPLATE_TABLES:
        names = ", ".join(sorted(unexpected))
        raise RuntimeError(f"{database}: a new Prefect database holds more than its schema: {names}")
    if missing := TEMPLATE_TABLES - rows:
        raise RuntimeError(f"{database}: a new Prefect database lacks {', '.join(sorted(missing))}")


def build_template(destination: Path | None = None) -> Path:
    """Let a temporary server of the installed Prefect create a database, then keep a copy of it."""
    from conveyor.temporary_api import TemporaryAPI

    destination = destination or template_path()
    with tempfile.TemporaryDirectory() as scratch:
        database = Path(scratch) / "prefect.db"
        # Prefect's start-up in full, whatever the environment says: the block types are registered.
        registering = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "true", "PREFECT_API_DATABASE_MIGRATE_ON_START": "true"}
        server = TemporaryAPI().begin(
            env={"PREFECT_HOME": scratch, DATABASE_URL: f"sqlite+aiosqlite:///{database}", **registering}, seed=False
        )
        try:
            server.wait(timeout=BUILD_TIMEOUT_S)
        finally:
            server.stop()
        check_new(database)
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.partial")
        partial.unlink(missing_ok=True)  # an interrupted build's
        with contextlib.closing(sqlite3.connect(database)) as new, contextlib.closing(sqlite3.connect(partial)) as out:
            new.backup(out)  # one consistent file, whatever is still in the write-ahead log
            # A file with no log of its own: reading it creates none (Prefect sets WAL on the copy).
            out.execute("PRAGMA journal_mode = DELETE")
        os.replace(partial, destination)
    return destination


if __name__ == "__main__":
    sys.stdout.write(f"Prefect's empty database: {build_template()}\n")
