"""The background consumer process: ``python -m nbmlops.streaming.worker PARENT_PID`` reads
``{"model", "options", "settings"}`` on stdin and consumes until SIGTERM or orphaned."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nbmlops.config import Settings
from nbmlops.errors import NbmlopsError
from nbmlops.serving.worker import exit_with_parent
from nbmlops.streaming.consumer import StreamOptions
from nbmlops.streaming.run import consume


def main(argv: list[str] | None = None) -> int:
    parent = int((argv or sys.argv[1:])[0])
    request = json.loads(sys.stdin.readline())
    if parent:
        exit_with_parent(parent)
    settings = Settings(**{**request["settings"], "home": Path(request["settings"]["home"])})
    try:
        return consume(request["model"], StreamOptions(**request["options"]), settings)
    except NbmlopsError as exc:
        print(f"error: {exc}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
