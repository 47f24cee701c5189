"""Load only what Conveyor wrote: a tampered, swapped or untagged model is refused (exit code 4)."""

from __future__ import annotations

import fractions
from pathlib import Path

import pytest
import skops.io

from conveyor import registry
from conveyor.artifacts import files_digest
from conveyor.errors import RegistryError
from tests.factories import classification_frame, copy_project

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def trained_template(churn_template: tuple[Path, dict]) -> Path:
    """The session's trained `churn` (v1, champion): each test works on a copy."""
    return churn_template[0]


@pytest.fixture
def model_folder(project: Path, trained_template: Path) -> Path:
    copy_project(trained_template, project)
    source = registry.get_version("churn", "1").source
    return Path(registry.client().get_logged_model(source.removeprefix("models:/")).artifact_location)


def test_an_untouched_model_loads(model_folder: Path) -> None:
    model = registry.load_model("churn", "1")
    frame = classification_frame(rows=5, seed=3).drop(columns=["label"])
    assert len(model.predict(frame)) == 5


def test_one_changed_byte_is_refused(model_folder: Path) -> None:
    file = model_folder / "model.skops"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="artifacts changed since registration") as caught:
        registry.load_model("churn", "1")
    assert caught.value.exit_code == 4


def test_a_swapped_file_with_its_digest_rewritten_is_refused_by_type(model_folder: Path) -> None:
    """An attacker who also rewrites the digest tag still cannot make us load a foreign type."""
    (model_folder / "model.skops").write_bytes(skops.io.dumps({"payload": fractions.Fraction(1, 3)}))
    registry.set_version_tags("churn", "1", {"conveyor.artifact_digest": files_digest(model_folder)})
    with pytest.raises(RegistryError, match="outside the allowed packages: fractions.Fraction"):
        registry.load_model("churn", "1")


def test_a_version_without_its_digest_is_refused(model_folder: Path) -> None:
    registry.client().delete_model_version_tag("churn", "1", "conveyor.artifact_digest")
    with pytest.raises(RegistryError, match="no artifact digest recorded"):
        registry.load_model("churn", "1")


def test_a_champion_moved_from_outside_is_reported_and_refused_by_scoring(
    model_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.scoring.model import load_serving_model

    v1 = registry.get_version("churn", "1")
    run_id = registry.start_run("churn", run_name="outside", tags={})
    other = registry.register_version(
        "churn", v1.source, run_id, dict(v1.tags), model_id=v1.source.removeprefix("models:/")
    )
    assert registry.unaudited_champion("churn") is None
    registry.set_alias("churn", registry.CHAMPION, str(other.version))  # no Conveyor decision behind it
    reason = registry.unaudited_champion("churn")
    assert reason == (
        f"champion v{other.version} of churn was not put there by Conveyor: "
        "the audit trail's last decision made v1 champion"
    )
    with pytest.raises(RegistryError, match="refusing to score with it") as caught:
        load_serving_model("churn")
    assert caught.value.exit_code == 4
    assert load_serving_model("churn", version="1").version == "1"  # a named version still scores
    monkeypatch.setenv("CONVEYOR_ALLOW_UNAUDITED_CHAMPION", "1")
    assert load_serving_model("churn").version == str(other.version)
