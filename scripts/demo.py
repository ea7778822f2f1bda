"""`make demo`: shows what the system can do so far, and says plainly what is not there yet."""

from __future__ import annotations

import argparse
import subprocess
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--headless", action="store_true", help="server and simulator only")
    parser.parse_args()
    print("WebHost Fleet demo")
    print("- local store self-test:")
    code = subprocess.call([sys.executable, "-m", "app.main", "--self-test"])
    print("- sync server: not available yet (issue 4)")
    print("- desktop app: not available yet (issue 6)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
