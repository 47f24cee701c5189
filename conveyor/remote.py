"""Data files named by a URI (`s3://bucket/key`, any fsspec protocol), read through fsspec.

s3fs (and boto3 under it) reads the endpoint and the keys from the environment:
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (`CONVEYOR_S3=1 conveyor up` hands
them to its flow runs, and writes them to `.conveyor/s3.env` for a shell).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from conveyor.errors import DataError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def is_uri(path: str) -> bool:
    return "://" in path


def url_to_fs(uri: str) -> tuple[AbstractFileSystem, str]:
    import fsspec.core

    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def open_binary(path: str) -> BinaryIO:
    """A URI's bytes, or a local file's."""
    if not is_uri(path):
        return open(path, "rb")
    fs, inner = url_to_fs(path)
    return cast(BinaryIO, fs.open(inner, "rb"))


def size(uri: str) -> int:
    fs, path = url_to_fs(uri)
    return int(fs.size(path))


def expands_within(uri: str, limit: int) -> bool:
    """Whether a compressed object's content is at most `limit` bytes, streamed and stopped early."""
    import fsspec

    total = 0
    with fsspec.open(uri, "rb", compression="infer") as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
            if total > limit:
                return False
    return True


def files(pattern: str, data_suffixes: Collection[str]) -> list[str]:
    """The objects a URI names, as full URIs, sorted: a glob's matches, a folder's (prefix's) data
    files, or the one object; a DataError when there is none."""
    fs, path = url_to_fs(pattern)
    fs.invalidate_cache()  # s3fs keeps listings per process: a long-lived one must see new files
    if any(char in path for char in "*?["):
        found = fs.glob(path, detail=True)
        matches = sorted(fs.unstrip_protocol(name) for name, info in found.items() if info.get("type") == "file")
        if not matches:
            raise DataError(f"{pattern}: the glob matches no file")
        return matches
    if fs.isdir(path):
        listed = sorted(
            fs.unstrip_protocol(info["name"])
            for info in fs.ls(path, detail=True)
            if info.get("type") == "file" and Path(info["name"]).suffix.lower() in data_suffixes
        )
        if not listed:
            raise DataError(f"{pattern}: the folder holds no .csv or .parquet file")
        return listed
    if not fs.isfile(path):
        raise DataError(f"{pattern}: no such file")
    return [pattern]
