"""Reading iptables-nft-save (netdiag.observe.iptables) runs the tool as a child process: a fixed
argv, no shell, one run per family whose rules use xt; a missing or failing tool is an
observation error, never a crash."""
import stat
from pathlib import Path

import pytest

from netdiag.observe import iptables as reading
from runtime.kernel import tools
from tests.unit.test_iptables_xlate import FIX, pair_of

pytestmark = pytest.mark.integration


def _tool(dir: Path, name: str, script: str) -> None:
    p = dir / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


def test_save_text_without_the_tool_records_an_error_and_reads_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools, "SBIN", ())
    errors: list = []
    assert reading.save_text(pair_of("icc_false")[0], errors, "ns-1") is None
    assert errors[0]["ns"] == "ns-1" and "iptables-nft-save is not installed" in errors[0]["error"]
    assert reading.save_text({"nftables": []}, errors, "ns-1") is None and len(errors) == 1


def test_save_text_runs_one_fixed_argv_per_family(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(tools, "SBIN", ())
    log = tmp_path / "argv"
    _tool(tmp_path, "iptables-nft-save", f'echo "$0 $#" >> {log}\ncat {FIX / "extras.save"}\n')
    _tool(tmp_path, "ip6tables-nft-save", "echo 'broken' >&2\nexit 4\n")
    errors: list = []
    got = reading.save_text(pair_of("extras")[0], errors, "ns-2")
    assert got == {"ip": (FIX / "extras.save").read_text()}
    assert log.read_text() == f"{tmp_path / 'iptables-nft-save'} 0\n"  # no arguments, no shell
    assert errors == [{"ns": "ns-2", "what": "iptables", "error": "ip6tables-nft-save exited 4: broken"}]
