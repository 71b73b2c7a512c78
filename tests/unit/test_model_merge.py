"""Several hosts' snapshots as one model: one kernel's namespaces are united, another kernel's are
renamed wherever they are referenced (namespace keys and ids, veth peers, containers, the host)."""
import copy
import json
from pathlib import Path

from netdiag.snapshot_model import Model, merge

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lab_snapshot.json"


def _snap(boot_id: str, hostname: str) -> dict:
    snap = json.loads(FIXTURE.read_text())
    snap.update(boot_id=boot_id, hostname=hostname)
    return snap


def test_snapshots_of_one_kernel_are_united():
    a, b = _snap("boot-1", "h1"), _snap("boot-1", "h2")
    merged = merge([a, b])
    assert set(merged["namespaces"]) == set(a["namespaces"])
    assert len(merged["containers"]) == len(a["containers"])


def test_another_kernels_namespaces_are_renamed_everywhere(tmp_path):
    a, b = _snap("boot-1", "h1"), _snap("boot-2", "h2")
    for c in b["containers"]:
        c["id"] = "f" + c["id"][1:]  # other containers on the other host
    merged = merge([copy.deepcopy(a), b])
    assert len(merged["namespaces"]) == 2 * len(a["namespaces"])
    assert merged["host"] == a["host"]
    renamed = {k: v for k, v in merged["namespaces"].items() if k.endswith("@h2-1")}
    assert len(renamed) == len(a["namespaces"]) and all(v["id"] == k for k, v in renamed.items())
    peers = [link["peer"]["ns"] for ns in renamed.values() for link in ns["links"] if (link.get("peer") or {}).get("ns")]
    assert peers and all(p.endswith("@h2-1") for p in peers)
    theirs = [c for c in merged["containers"] if c["id"].startswith("f")]
    assert theirs and all(c["ns"].endswith("@h2-1") for c in theirs if c.get("ns"))
    # and it loads as one model from the files
    for name, snap in (("a.json", a), ("b.json", _snap("boot-2", "h2"))):
        (tmp_path / name).write_text(json.dumps(snap))
    m = Model.load([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert len(list(m.namespaces)) == 2 * len(a["namespaces"])
