"""SeaweedFS as `CONVEYOR_S3=1 conveyor up` runs it: time to a usable bucket, memory, time to stop.

Usage: benchmarks/bench_seaweedfs.py [--runs 3]
Each run starts `weed server -s3` with the stack's own command line (app/stack/scaled.py) in a
fresh temporary folder, polls until the bucket is created (what `up` waits for), uploads and
lists one object, reads the process tree's resident memory, then stops it as `down` does
(SIGTERM, SCALED.SEAWEEDFS_STOP_GRACE seconds, then SIGKILL). Prints JSON on its last line and
writes benchmarks/results/seaweedfs.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from app.stack import scaled  # noqa: E402
from app.stack.config import StackConfig  # noqa: E402
from app.stack.processes import process_tree, rss_bytes, spawn, terminate  # noqa: E402
from app.stack.services import base_env  # noqa: E402
from benchmarks.common import write_result  # noqa: E402


def one_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        config = scaled.with_ports(StackConfig(Path(folder), s3=True))
        config.logs_dir.mkdir(parents=True)
        config.seaweedfs_dir.mkdir(parents=True)
        scaled.ensure_s3_identity(config)
        command = scaled.extra_commands(config)[scaled.SEAWEEDFS]
        started = time.monotonic()
        service = spawn(scaled.SEAWEEDFS, command, base_env(config), config)
        service.cmd = command
        try:
            while not scaled.ensure_bucket(config):
                if time.monotonic() - started > 120:
                    raise SystemExit(f"SeaweedFS gave no bucket in 120 s; see {service.log}")
                time.sleep(0.1)
            ready = time.monotonic() - started
            client = scaled.s3_client(config)
            client.put_object(Bucket=scaled.BUCKET, Key="probe/one.txt", Body=b"x" * 1024)
            assert client.list_objects_v2(Bucket=scaled.BUCKET, Prefix="probe/")["KeyCount"] == 1
            memory = rss_bytes(process_tree(service.pid))
        finally:
            stopping = time.monotonic()
            left = terminate([service], timeout=scaled.SEAWEEDFS_STOP_GRACE, expect_kill=True)
            stopped = time.monotonic() - stopping
        if left:
            raise SystemExit("SeaweedFS survived SIGKILL")
        return {"ready_seconds": round(ready, 2), "rss_bytes": memory, "stop_seconds": round(stopped, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = [one_run() for _ in range(parser.parse_args().runs)]
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    result = {
        "benchmark": "seaweedfs",
        "runs": runs,
        "rss_mb": round(median["rss_bytes"] / 2**20),  # reported, no goal
        "goals": {
            "start to bucket (s)": {"value": median["ready_seconds"], "goal": 15, "met": median["ready_seconds"] <= 15},
            "stop (s)": {"value": median["stop_seconds"], "goal": 5, "met": median["stop_seconds"] <= 5},
        },
    }
    write_result(HERE / "results" / "seaweedfs.json", result)


if __name__ == "__main__":
    main()
