"""`netdiag explain cni:ID`: a kubelet's CNI pod. Its probes are in its pod spec, which only the
kubelet has (the CNI cache records networks, addresses and hostPorts, no probe). What a kubelet's
tcpSocket probe does can be done from what the node has: connect from the node's own network
namespace (where the kubelet runs) to the pod's address at each container port the pod publishes.
Each is checked as `netdiag health`, which names the network cause of a failing one."""
from __future__ import annotations

from runtime.errors import InvalidArgument

from .pipeline import run_health
from .spec import Spec

DEFAULT_TIMEOUT = 1.0  # a kubelet probe's default timeoutSeconds


def explain_pod(pod: dict, model, timeout: float | None = None) -> dict:
    ports = sorted({(p["ctr_port"], p["proto"]) for p in pod.get("ports") or [] if p.get("proto") == "tcp"})
    if not ports:
        raise InvalidArgument(f"{pod['name']} is a CNI pod that publishes no TCP port",
                              "its probes are in its pod spec, which only the kubelet has; the CNI cache holds no probe",
                              f"check the probe's port as the kubelet does: netdiag health {pod['name']}:PORT --from host "
                              "[--http PATH]")
    checks = []
    for port, _ in ports:
        spec = Spec(host=pod["name"], port=port, mode="tcp", timeout=timeout or DEFAULT_TIMEOUT)
        checks.append({"port": port, "health": run_health(spec, "host", model=model)})
    failing = [c for c in checks if not c["health"]["healthy"]]
    shown = ", ".join(str(c["port"]) for c in checks)
    out = {"kind": "pod", "container": pod["name"], "id": pod["id"], "runtime": "cni", "checks": checks,
           "health": (failing or checks)[0]["health"]}
    if not failing:
        out["summary"] = f"{pod['name']}'s ports ({shown}) answer a kubelet-style TCP probe from the host"
        out["exit"] = 0
        return out
    first = failing[0]["health"]
    out["summary"] = (f"a kubelet's TCP probe of {pod['name']} from the host fails at port {failing[0]['port']}: "
                      + (f"{first['cause']}: {first['summary']}" if first["cause"] else first["summary"]))
    out["exit"] = 1 if first["cause"] else 3
    return out
