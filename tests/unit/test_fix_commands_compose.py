"""A container of a Compose stack is changed through its compose file: a fix never recreates it
by hand (it would leave the stack: labels, aliases, other networks; the next `up` brings the old
one back). What the fix says instead names the project, the service and the command."""
import copy
import json
from pathlib import Path

from netdiag.diagnose import diagnose
from netdiag.reason import fixes
from netdiag.snapshot_model import Model

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())


def _container(**extra):
    return {"name": "shop-app-1", "runtime": "netdiag", "image": "busybox", "command": ["httpd", "-f", "-p", "127.0.0.1:80"],
            "ports": [], "network_mode": "shop_default", **extra}


def test_a_stack_container_gets_no_hand_made_recreate():
    plain, stacked = _container(), _container(compose={"project": "shop", "service": "app", "number": 1})
    assert fixes.recreate(plain, "-p", "80:80").startswith("netdiag rm -f shop-app-1 && netdiag run")
    assert fixes.recreate(stacked, "-p", "80:80") == "" and not fixes.can_recreate(stacked)
    why = fixes.no_command(stacked)
    assert why.startswith("manual: ") and "service app of the Compose project shop" in why
    assert "'netdiag compose -p shop up -d'" in why
    assert "'docker compose -p shop up -d'" in fixes.no_command({**stacked, "runtime": "docker"})
    assert fixes.no_command(plain) == fixes.NO_IMAGE


def _listening_on_loopback(compose: bool) -> dict:
    """The fixture, with api's own command binding 127.0.0.1:9000 (the listener it has), so a
    loopback listener's fix can recreate it with 0.0.0.0 there."""
    snap = copy.deepcopy(FIXTURE)
    api = next(c for c in snap["containers"] if c["name"] == "api")
    api.update(image="busybox", command=["httpd", "-f", "-p", "127.0.0.1:9000"], entrypoint=None)
    if compose:
        api["compose"] = {"project": "shop", "service": "api", "number": 1}
    return diagnose(Model(snap), "db", "api", port=9000, live=False).to_json()


def test_a_diagnosis_of_a_stack_container_prints_the_compose_way():
    plain = _listening_on_loopback(False)
    assert plain["cause"] == "LISTENER_LOOPBACK_ONLY" and plain["fix_command"].startswith("netdiag rm -f api && netdiag run")
    stacked = _listening_on_loopback(True)
    assert stacked["cause"] == "LISTENER_LOOPBACK_ONLY" and stacked["fix_command"] is None
    assert "listen on 0.0.0.0 instead of 127.0.0.1" in stacked["fix"] and "'netdiag compose -p shop up -d'" in stacked["fix"]
