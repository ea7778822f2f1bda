"""A client killed at any moment while editing comes back with its update log, document and
tables in agreement, and with every change the server had acknowledged."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from storage import Store
from sync.mirror import Mirror

ROOT = Path(__file__).resolve().parents[2]


def run_writer_until_killed(db: Path, start: int, acks_before_kill: int) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sync.crash_mirror_writer", str(db), str(start)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        for line in proc.stdout:
            acked.append(line.strip())
            if len(acked) >= acks_before_kill:
                break
    finally:
        # By now the writer is somewhere in its next create, ack or compaction: no clean-up.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return acked


def test_sigkill_while_mirroring_leaves_log_document_and_tables_in_agreement(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    rng = random.Random(11)
    acked: list[str] = []
    for round_number in range(20):
        new = run_writer_until_killed(db, round_number * 1000, rng.randint(1, 15))
        assert new, "the writer acked nothing before it was killed"
        acked.extend(new)

        with Store(db) as store:
            assert store.integrity_check() == "ok"
            mirror = Mirror(store)
            report = mirror.load()
            assert (report.rewritten, report.removed) == (0, 0), f"round {round_number}: tables needed repair"
            assert mirror.verify_and_repair().clean

            in_document = mirror.document.ids("vehicles")
            in_table = store.vehicles.ids()
            assert in_document == in_table
            missing = set(acked) - in_document
            assert not missing, f"round {round_number}: acked vehicles lost: {sorted(missing)}"
            # At most the create the kill interrupted between its commit and its ack is pending.
            assert store.sync_log.pending_count() <= 1
