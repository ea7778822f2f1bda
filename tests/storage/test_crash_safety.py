"""The store survives its writer being killed mid-write: no corruption, no lost commit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from storage import Store

ROOT = Path(__file__).resolve().parents[2]


def _run_writer_until_killed(db: Path, start: int, commits_before_kill: int) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_writer", str(db), str(start)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    committed = []
    for line in proc.stdout:
        committed.append(int(line))
        if len(committed) >= commits_before_kill:
            break
    # The writer is in the middle of its next batch by now: kill it without any clean-up.
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    return committed


def test_sigkill_mid_write_never_corrupts_or_loses_committed_rows(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    rng = random.Random(7)
    committed: list[int] = []
    next_batch = 0
    for _ in range(20):
        new = _run_writer_until_killed(db, next_batch, rng.randint(1, 15))
        assert new, "the writer committed nothing before it was killed"
        committed.extend(new)
        next_batch = new[-1] + 1000  # leave room for a batch that committed after the last line we read

        with Store(db) as store:
            assert store.integrity_check() == "ok"
            vehicle_ids = store.vehicles.ids()
            assert {f"v{b}" for b in committed} <= vehicle_ids
            for batch in committed:
                assert _fixes_of_batch(store, batch) == 100, f"batch {batch} lost fixes"
            # A batch is all or nothing: every vehicle present has all its fixes.
            for vid in vehicle_ids:
                assert _fixes_of_batch(store, int(vid[1:])) == 100
            indexed = store.scalar("SELECT count(*) FROM positions_rtree")
            assert indexed == store.scalar("SELECT count(*) FROM positions")


def _fixes_of_batch(store: Store, batch: int) -> int:
    sql = "SELECT count(*) FROM positions WHERE fix_time BETWEEN ? AND ?"
    return int(store.scalar(sql, (batch * 100, batch * 100 + 99)))
