"""Docker-style HEALTHCHECK, run by the container's monitor: starting -> healthy | unhealthy."""
from __future__ import annotations

import time

from . import container_records

NS = 1_000_000_000


class Ticker:
    def __init__(self, c: container_records.Container, test: list[str], interval: float, timeout: float, retries: int, start_period: float):
        self.c, self.test, self.interval, self.timeout = c, test, interval, timeout
        self.retries, self.start_period = retries, start_period
        self.started = time.monotonic()
        self.streak = 0
        self.log: list[dict] = []
        self._save("starting")

    @classmethod
    def for_container(cls, c: container_records.Container) -> "Ticker | None":
        hc = c.config["Config"].get("Healthcheck") or {}
        test = hc.get("Test") or []
        if not test or test[0] == "NONE":
            return None
        argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])
        return cls(c, argv, (hc.get("Interval") or 30 * NS) / NS, (hc.get("Timeout") or 30 * NS) / NS,
                   hc.get("Retries") or 3, (hc.get("StartPeriod") or 0) / NS)

    def tick(self) -> None:
        from .execute import run_captured

        start = container_records.now_iso()
        code, output = run_captured(self.c, self.test, self.timeout)
        self.log = (self.log + [{"Start": start, "End": container_records.now_iso(), "ExitCode": code, "Output": output}])[-5:]
        if code == 0:
            self.streak = 0
            return self._save("healthy")
        in_grace = time.monotonic() - self.started < self.start_period
        if not in_grace:
            self.streak += 1
        status = "unhealthy" if self.streak >= self.retries else (self.c.state.get("Health") or {}).get("Status", "starting")
        self._save(status)

    def _save(self, status: str) -> None:
        from ..errors import NetdiagError

        fresh = container_records.get(self.c.id)
        try:
            fresh.save_state(Health={"Status": status, "FailingStreak": self.streak, "Log": self.log})
        except NetdiagError:  # a full disk: the next check tries again; never the monitor's end
            return
        self.c.state = fresh.state
