"""The statements of one large write transaction, run in order on a worker thread, so that SQLite
writes one batch of rows while the caller prepares the next.

The sqlite3 module releases the GIL while a statement runs, so a worker thread inside a long
statement (Repository.insert_rows: thousands of rows per statement) leaves the interpreter to
the caller. The caller opens and commits the transaction; in between it must not use the
connection itself, only hand statements to the queue, and wait for them before committing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Job = Callable[[Any], object]


class StatementQueue:
    """Runs jobs (functions of the connection) one after another on its own thread."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bulk-write", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def join(self) -> BaseException | None:
        """Wait until every job submitted so far has run; the first failure, if one failed (the
        jobs after it are skipped: the transaction is going to be rolled back)."""
        self._jobs.put(None)
        self._thread.join()
        return self._error

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None:
                try:
                    job(self._conn)
                except BaseException as exc:  # handed to the caller by join()
                    self._error = exc


@contextmanager
def statement_queue(conn: Any) -> Iterator[StatementQueue]:
    """A StatementQueue for the block; leaving it waits for every job and raises the first
    failure. If the block itself raises, its jobs are still waited for (the caller's rollback
    must not run beside them) and the block's exception is the one that propagates."""
    jobs = StatementQueue(conn)
    try:
        yield jobs
    except BaseException:
        jobs.join()
        raise
    error = jobs.join()
    if error is not None:
        raise error
