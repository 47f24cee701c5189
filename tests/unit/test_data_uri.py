"""Data named by a URI goes through fsspec: fsspec's in-memory filesystem stands for S3 here
(tests/e2e/test_s3.py does the same against a real S3 store)."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator

import fsspec
import pytest

from conveyor.errors import DataError
from tasks.data import data_digest, load_dataset, resolve_files

CSV = b"a,b,y\n1,2,0\n3,4,1\n5,6,0\n"


@pytest.fixture
def bucket() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = "/conveyor-test"
    fs.mkdir(root)
    fs.pipe(
        {f"{root}/data/one.csv": CSV, f"{root}/data/two.csv": CSV.replace(b"1,2", b"7,8"), f"{root}/notes.md": b"x"}
    )
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def test_a_glob_a_folder_and_one_object_resolve_to_full_uris(bucket: str) -> None:
    both = [f"{bucket}/data/one.csv", f"{bucket}/data/two.csv"]
    assert resolve_files(f"{bucket}/data/*.csv") == both
    assert resolve_files(f"{bucket}/**/*.csv") == both
    assert resolve_files(f"{bucket}/data") == both
    assert resolve_files(f"{bucket}/data/one.csv") == both[:1]
    assert resolve_files(f"{bucket}/data/*.csv", max_files=2) == both
    with pytest.raises(DataError, match="names 2 files, more than the 1"):
        resolve_files(f"{bucket}/data/*.csv", max_files=1)


def test_new_objects_are_seen_by_the_next_listing(bucket: str) -> None:
    assert len(resolve_files(f"{bucket}/data/*.csv")) == 2
    fsspec.filesystem("memory").pipe(f"{bucket.removeprefix('memory://')}/data/three.csv", CSV)
    assert len(resolve_files(f"{bucket}/data/*.csv")) == 3


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("data/*.parquet", "the glob matches no file"),
        ("data/nope.csv", "no such file"),
        ("", "the folder holds no .csv or .parquet file"),
    ],
)
def test_nothing_to_read_is_one_line_naming_the_uri(bucket: str, path: str, message: str) -> None:
    uri = f"{bucket}/{path}" if path else bucket
    with pytest.raises(DataError, match=message) as caught:
        resolve_files(uri)
    assert str(caught.value).startswith(uri)


def test_the_digest_and_the_frame_are_those_of_the_bytes(bucket: str) -> None:
    dataset = load_dataset(f"{bucket}/data/*.csv")
    assert dataset.frame.shape == (6, 3)
    assert dataset.file_digests[f"{bucket}/data/one.csv"] == hashlib.sha256(CSV).hexdigest()
    assert data_digest(f"{bucket}/data/*.csv") == dataset.digest


def test_size_bounds_hold_for_objects_and_what_they_expand_to(bucket: str) -> None:
    fs = fsspec.filesystem("memory")
    root = bucket.removeprefix("memory://")
    fs.pipe(f"{root}/big/zeros.csv.gz", gzip.compress(b"a\n" + b"0\n" * 1_000_000))
    fs.pipe(f"{root}/empty/nothing.csv", b"")
    with pytest.raises(DataError, match="expands to more than the 1 MB limit"):
        load_dataset(f"{bucket}/big/zeros.csv.gz", max_file_mb=1)
    with pytest.raises(DataError, match="the file is empty"):
        load_dataset(f"{bucket}/empty/nothing.csv")
    with pytest.raises(DataError, match="above the 1e-05 MB limit"):
        load_dataset(f"{bucket}/data/one.csv", max_file_mb=0.00001)
