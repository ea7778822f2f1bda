"""Writer process for the mirror crash test: creates vehicles through the mirror, settles each as
acked by the server, and prints the vehicle id once that ack is committed."""

from __future__ import annotations

import sys

from storage import Store
from sync.mirror import Mirror
from sync.services import LocalFleet

COMPACT_EVERY = 7


def main() -> None:
    path, start = sys.argv[1], int(sys.argv[2])
    store = Store(path)
    mirror = Mirror.open(store)
    fleet = LocalFleet(mirror)
    number = start
    while True:
        vehicle_id = fleet.create("vehicles", {"name": f"vehicle {number}", "plate": f"P-{number}",
                                               "notes": "x" * 300, "speed_limit_kph": 80})
        # What the sync client does when the server acks: settle every local row up to here.
        store.sync_log.mark_acked_upto(store.sync_log.max_seq())
        print(vehicle_id, flush=True)
        number += 1
        if number % COMPACT_EVERY == 0:
            mirror.compact()  # a kill may land inside compaction too


if __name__ == "__main__":
    main()
