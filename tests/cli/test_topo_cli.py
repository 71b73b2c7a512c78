"""`netdiag topo` as a user runs it on a saved snapshot and a saved `trace --json` (no root): with -o
only the file is written, in every format, and the trace is drawn on it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent.parent / "fixtures" / "topo_engines.json"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    world = json.loads(FIXTURE.read_text())
    tmp = tmp_path_factory.mktemp("topo-cli")
    (tmp / "snap.json").write_text(json.dumps(world["snapshot"]))
    (tmp / "trace.json").write_text(json.dumps(world["trace_d1_d2"]))
    return tmp


@pytest.mark.parametrize("suffix", ["svg", "dot", "html"])
def test_topo_with_a_trace_and_an_output_file_writes_only_the_file(files, suffix):
    out = files / f"path.{suffix}"
    p = subprocess.run([sys.executable, "-m", "netdiag", "topo", "--snapshot", str(files / "snap.json"),
                        "--trace", str(files / "trace.json"), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout == "" and p.stderr.strip() == f"wrote {out}", p.stdout[:300] + p.stderr
    drawn = out.read_text()
    assert "● hop 3 passed" in drawn and "✗ hop 4 failed" in drawn and "Docker container" in drawn
