"""A real firewalld (Debian's firewalld 1.3, nftables backend) inside a lab host.

firewalld needs a D-Bus system bus and a config directory. Both are private here: a dbus-daemon
of our own (its config and socket in the work directory, DBUS_SYSTEM_BUS_ADDRESS points firewalld
and firewall-cmd at it), firewalld's system config in the work directory (--system-config; empty,
so firewalld's built-in defaults apply: default zone public), no pid file, logs to the console,
and a private mount namespace with a tmpfs on /run (firewalld's temp dir) so it writes nothing on
the machine. It runs with nsenter in the lab's network namespace: its table `inet firewalld`
exists only there. Stopping it (SIGTERM) removes its table (CleanupOnExit's default).

Nothing may change the machine's root network namespace: `firewalld_lab()` compares its links and
nftables ruleset before and after (tests/dockerkit.py's root_netns_state).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.dockerkit import root_netns_state
from tests.labkit import World

HAVE_FIREWALLD = all(shutil.which(x) for x in ("firewalld", "firewall-cmd", "dbus-daemon"))

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


class Firewalld:
    """A private bus and firewalld for the lab `lab`, everything in `work`."""

    def __init__(self, lab: World, work: Path):
        self.lab, self.work = lab, work
        self.sock = work / "bus.sock"
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.sock}"}
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout: float = 30.0) -> None:
        (self.work / "etc").mkdir(parents=True, exist_ok=True)
        (self.work / "bus.conf").write_text(BUS_CONFIG.format(sock=self.sock))
        bus_log = open(self.work / "bus.log", "ab")
        self.procs.append(subprocess.Popen(
            ["dbus-daemon", f"--config-file={self.work / 'bus.conf'}", "--nofork", "--nopidfile"],
            stdin=subprocess.DEVNULL, stdout=bus_log, stderr=bus_log, start_new_session=True))
        bus_log.close()
        self._wait(lambda: self.sock.exists(), timeout, "dbus-daemon did not make its socket")
        fw_log = open(self.work / "firewalld.log", "ab")
        # private /run: firewalld's temp dir (/run/firewalld) must not appear on the machine
        script = f"mount -t tmpfs none /run && exec firewalld --nofork --nopid --log-target console " \
                 f"--system-config {self.work / 'etc'}"
        self.procs.append(subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.lab.name}", "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=self.env, stdin=subprocess.DEVNULL, stdout=fw_log, stderr=fw_log, start_new_session=True))
        fw_log.close()
        self._wait(lambda: self.cmd("--state").stdout.strip() == "running", timeout, "firewalld did not come up")

    def cmd(self, *args: str) -> subprocess.CompletedProcess:
        """firewall-cmd against this firewalld."""
        return subprocess.run(["firewall-cmd", *args], env=self.env, capture_output=True, text=True, timeout=60)

    def _wait(self, pred, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            if pred():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what}: {self.log_tail()}")

    def log_tail(self) -> str:
        logs = [self.work / n for n in ("bus.log", "firewalld.log")]
        return " | ".join(p.read_text(errors="replace")[-400:] for p in logs if p.exists())

    def stop(self) -> None:
        for p in reversed(self.procs):  # firewalld first (it removes its table), then its bus
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()


@contextlib.contextmanager
def firewalld_lab(tmp: Path):
    """A lab host (an httpd in its outside namespace) with a private firewalld running in it;
    DBUS_SYSTEM_BUS_ADDRESS in the lab's environment, so a printed firewall-cmd fix runs as is.
    Everything is removed at the end and checked for leaks, also on failure."""
    root_before = root_netns_state()
    lab = World(state_dir=tmp / "ndroot")
    fw = Firewalld(lab, Path(tempfile.mkdtemp(prefix="ndfwd-")))
    left: list[str] = []
    try:
        lab.create()
        fw.start()
        lab.env["DBUS_SYSTEM_BUS_ADDRESS"] = fw.env["DBUS_SYSTEM_BUS_ADDRESS"]
        lab.outside_server(tmp)
        yield lab, fw
    finally:
        for what, step in (("firewalld", fw.stop), ("lab", lab.destroy)):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - the other steps and checks still run
                left.append(f"{what} clean-up failed: {e}")
        shutil.rmtree(fw.work, ignore_errors=True)
        left += lab.leaks()
        if os.path.exists("/run/firewalld"):
            left.append("/run/firewalld appeared on the machine")
        root_after = root_netns_state()
        if root_after != root_before:
            left.append("the root network namespace's links or nftables ruleset CHANGED")
    assert not left, "left behind: " + "; ".join(left)
