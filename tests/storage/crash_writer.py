"""Writer process for the crash-safety test: commits batches and reports each commit on stdout."""

from __future__ import annotations

import sys

from storage import Store
from storage.positions import Fix


def main() -> None:
    path, start = sys.argv[1], int(sys.argv[2])
    store = Store(path)
    batch = start
    while True:
        # Each committed batch mixes the kinds of writes the app makes: a record and its fixes.
        fixes = [Fix("crash-device", float(batch * 100 + i), 52.5, 13.4 + i * 1e-5) for i in range(100)]
        with store.transaction():
            store.vehicles.upsert(f"v{batch}", {"name": f"vehicle {batch}", "notes": "x" * 500})
            store.positions.add_many(fixes)
        print(batch, flush=True)
        batch += 1


if __name__ == "__main__":
    main()
