"""What every benchmark that starts processes needs: a fresh folder of its
own under bench/work, and the services it started stopped, newest first,
with the folder removed, however the run ends."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from app.native import Service

WORK = Path(__file__).resolve().parent / "work"


class Workspace:
    def __init__(self, name: str):
        # The pid keeps two runs on one machine out of each other's way.
        self.base = WORK / f"{name}-{os.getpid()}"
        self.logs = self.base / "logs"
        self.started: list[Service] = []

    def __enter__(self) -> "Workspace":
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(parents=True)
        return self

    def keep(self, service: Service, timeout: float = 90) -> Service:
        """Wait until `service` is ready; it is stopped when the run ends."""
        self.started.append(service)
        service.wait_ready(timeout)
        return service

    def __exit__(self, *exc) -> None:
        for service in reversed(self.started):
            service.stop()
        shutil.rmtree(self.base, ignore_errors=True)
