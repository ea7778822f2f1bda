"""Entry point PyInstaller freezes into `webhost-desktop`: the same main() the console script runs."""

from app.main import main

if __name__ == "__main__":
    raise SystemExit(main())
