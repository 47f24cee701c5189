"""A new Prefect database starts as a copy of the empty one `make install` made: real Prefect servers,
real SQLite files."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import threading
from contextlib import closing
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from conveyor import mlflow_database, prefect_database
from conveyor.prefect_database import TEMPLATE_TABLES, seed, template_path
from conveyor.sqlite_template import tables_with_rows
from conveyor.temporary_api import TemporaryAPI


def revision(database: Path) -> str:
    with closing(sqlite3.connect(database)) as db:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def sqlite_head() -> str:
    """The last of Prefect's SQLite migrations, from its own migration scripts."""
    import prefect.server.database
    from alembic.script import ScriptDirectory

    migrations = Path(prefect.server.database.__file__).parent / "_migrations"
    heads = ScriptDirectory(str(migrations), version_locations=[str(migrations / "versions" / "sqlite")]).get_heads()
    assert len(heads) == 1
    return str(heads[0])


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def test_make_install_left_the_empty_database_of_the_installed_prefect() -> None:
    """`make install` made it with a temporary server on a new database, as a command does when
    there is no copy: its block types show that such a server still registers them (only a
    database that exists skips that)."""
    template = template_path()
    assert template.is_file(), "run `make install`: it builds Prefect's empty database"
    assert revision(template) == sqlite_head()
    assert tables_with_rows(template) == TEMPLATE_TABLES  # the block types, and no run, no key


def test_a_temporary_server_on_a_new_home_starts_from_the_copy_and_records_what_it_is_sent(tmp_path: Path) -> None:
    home = tmp_path / "home"
    database = home / "prefect.db"
    server = TemporaryAPI().begin(env={"PREFECT_HOME": str(home), prefect_database.DATABASE_URL: url(database)})
    try:
        # Before the server process has even imported Prefect, its database is at the head.
        assert revision(database) == sqlite_head()
        api = server.wait()
        created = httpx.post(f"{api}/flows/", json={"name": "seeded"}, timeout=10)
        assert created.status_code in (200, 201), created.text
        read = httpx.get(f"{api}/flows/{created.json()['id']}", timeout=10)
        assert read.json()["name"] == "seeded"
        assert httpx.post(f"{api}/block_types/filter", json={}, timeout=10).json()  # registered types answer
    finally:
        server.stop()
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT name FROM flow").fetchall() == [("seeded",)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # Prefect's own mode, set on the copy
    # A copy, not a link to the template: every home sharing one file would show here.
    assert tables_with_rows(template_path()) == TEMPLATE_TABLES


def test_an_existing_database_is_never_replaced(tmp_path: Path) -> None:
    database = tmp_path / "prefect.db"
    with closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE mine (x)")
        db.execute("INSERT INTO mine VALUES (1)")
        db.commit()
    assert seed(url(database)) is False
    assert tables_with_rows(database) == {"mine"}

    # A write-ahead log without its database is what a crash can leave: not a place to copy over.
    lonely = tmp_path / "other.db"
    Path(f"{lonely}-wal").write_bytes(b"")
    assert seed(url(lonely)) is False
    assert not lonely.exists()


def test_no_room_for_the_copy_leaves_nothing_behind(tiny_disk: Path) -> None:
    """A full disk: no half file for a server to open; Prefect's server then creates the database,
    or says why it cannot."""
    with (tiny_disk / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):  # until ENOSPC
        while True:
            filler.write(b"x" * 65536)
    assert seed(url(tiny_disk / "prefect.db")) is False
    assert [path.name for path in tiny_disk.iterdir()] == ["filler"]
    (tiny_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)  # root ignores permissions
    assert seed(url(tiny_disk / "prefect.db")) is False


@pytest.mark.parametrize(
    "address",
    ["postgresql+asyncpg://prefect@127.0.0.1:5432/prefect", "sqlite+aiosqlite:///:memory:", "sqlite://"],
)
def test_only_a_sqlite_file_is_seeded(address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert seed(address) is False
    assert list(tmp_path.iterdir()) == []


def test_commands_starting_at_once_leave_one_whole_copy(tmp_path: Path) -> None:
    database = tmp_path / "new" / "prefect.db"
    results: list[bool] = []
    start = threading.Barrier(8)

    def seeder() -> None:
        start.wait()
        results.append(seed(url(database)))

    threads = [threading.Thread(target=seeder) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert database.read_bytes() == template_path().read_bytes()
    assert [path.name for path in database.parent.iterdir()] == ["prefect.db"]  # no scratch copy left


def test_no_template_of_this_prefect_means_prefect_creates_the_database(tmp_path: Path) -> None:
    assert seed(url(tmp_path / "prefect.db"), template=tmp_path / "prefect-0.0.0.db") is False
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("module", "extra", "needed"),
    [(prefect_database, "flow", "block_type"), (mlflow_database, "experiments", "workspaces")],
    ids=["prefect", "mlflow"],
)
def test_a_database_holding_more_or_less_than_the_schema_is_no_template(
    tmp_path: Path, module: ModuleType, extra: str, needed: str
) -> None:
    """What a new database holds is checked, not assumed: were a Prefect release to write a run or a
    key at its first start, every copy would share it (and an MLflow store its default experiment,
    whose artifact location names the scratch folder); without block types, no server would add them."""
    database = tmp_path / "used.db"
    with closing(sqlite3.connect(database)) as db:
        for table in [*module.TEMPLATE_TABLES, extra]:
            db.execute(f"CREATE TABLE {table} (x)")
            db.execute(f"INSERT INTO {table} VALUES (1)")
        db.commit()
    with pytest.raises(RuntimeError, match=f"holds more than its schema: {extra}$"):
        module.check_new(database)
    with closing(sqlite3.connect(database)) as db:
        db.execute(f"DELETE FROM {extra}")
        db.commit()
    module.check_new(database)
    with closing(sqlite3.connect(database)) as db:
        db.execute(f"DELETE FROM {needed}")
        db.commit()
    with pytest.raises(RuntimeError, match=f"lacks {needed}$"):
        module.check_new(database)
