"""``python -m workers.listener [--rescan]``: what ``images-service listener`` execs."""

from __future__ import annotations

import argparse
import sys

from images_service.config.settings import SettingsError, load_settings
from workers.listener.process import run_listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="images-service listener")
    parser.add_argument("--rescan", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"images-service: configuration error: {exc}", file=sys.stderr)
        return 2
    return run_listener(settings, rescan=args.rescan)


if __name__ == "__main__":
    sys.exit(main())
