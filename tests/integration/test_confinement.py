"""Docker's default confinement, seen from inside containers run by the CLI in a lab: capabilities,
seccomp and no_new_privs of the init, of `exec` and of health checks; what they refuse (mounts,
links, the host's disk, sysctls, masked /proc files); exec's descriptors and cgroups; the options."""
import json
import os
from pathlib import Path

import pytest

from tests.labkit import wait_for

pytestmark = pytest.mark.integration

DEFAULT_CAPS = 0xA80425FB  # Docker's 14 (moby daemon/pkg/oci/caps/defaults.go)
NET_ADMIN = 1 << 12
STATUS = "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp(_filters)?):' /proc/self/status"


def _status(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        out[key] = int(value, 16) if key.startswith("Cap") else int(value)
    return out


def _my_caps() -> int:
    """The capabilities netdiag itself has here: what --privileged can give (moby's rule too)."""
    return next(int(line.split()[1], 16) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("CapEff:"))




@pytest.mark.parametrize("opts, eff, bnd, seccomp, nnp", [
    ([], DEFAULT_CAPS, DEFAULT_CAPS, 2, 0),
    (["--cap-add", "NET_ADMIN"], DEFAULT_CAPS | NET_ADMIN, DEFAULT_CAPS | NET_ADMIN, 2, 0),
    (["--cap-add", "cap_net_admin", "--cap-drop", "chown"], (DEFAULT_CAPS | NET_ADMIN) & ~1, (DEFAULT_CAPS | NET_ADMIN) & ~1, 2, 0),
    (["--cap-drop", "ALL"], 0, 0, 2, 0),
    (["--cap-drop", "ALL", "--cap-add", "NET_RAW"], 1 << 13, 1 << 13, 2, 0),
    (["--privileged"], "mine", "mine", 0, 0),
    (["--security-opt", "seccomp=unconfined"], DEFAULT_CAPS, DEFAULT_CAPS, 0, 0),
    (["--security-opt", "no-new-privileges"], DEFAULT_CAPS, DEFAULT_CAPS, 2, 1),
    (["--security-opt", "no-new-privileges=false"], DEFAULT_CAPS, DEFAULT_CAPS, 2, 0),
    (["-u", "nobody"], 0, DEFAULT_CAPS, 2, 0),  # a non-root user keeps no capability across execve
])
def test_the_init_gets_dockers_capabilities_seccomp_and_no_new_privs(lab, opts, eff, bnd, seccomp, nnp):
    st = _status(lab.ok("run", "--rm", "--network", "none", *opts, "busybox", "sh", "-c", STATUS))
    eff, bnd = (_my_caps() if v == "mine" else v for v in (eff, bnd))
    assert (st["CapEff"], st["CapBnd"], st["Seccomp"], st["NoNewPrivs"]) == (eff, bnd, seccomp, nnp), st
    assert st["CapPrm"] == st["CapEff"] and st["CapInh"] == 0 and st["CapAmb"] == 0
    if seccomp:
        assert st["Seccomp_filters"] == 1


CHECKS = """
mkdir -p /tmp/t /tmp/cg
mount -t tmpfs t /tmp/t 2>/dev/null && echo MOUNT-TMPFS
mount -t cgroup -o memory cgroup /tmp/cg 2>/dev/null && echo MOUNT-CGROUP
ip link add v0 type veth peer name v1 2>/dev/null && echo LINK-ADD
echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null && echo SYSCTL-WRITE
[ -n "$(head -c 64 /proc/keys 2>/dev/null)" ] && echo KEYS-READABLE
[ -n "$(head -c 64 /proc/timer_list 2>/dev/null)" ] && echo TIMER-LIST-READABLE
grep -q ' /proc/sys proc ro,' /proc/mounts && echo PROC-SYS-RO
grep -q ' /sys sysfs ro,' /proc/mounts && echo SYS-RO
true
"""


def test_default_refuses_what_docker_refuses_and_privileged_allows_it(lab):
    # the container has its own network namespace: even a sysctl that got through stays in it
    confined = set(lab.ok("run", "--rm", "busybox", "sh", "-c", CHECKS).split())
    assert confined == {"PROC-SYS-RO", "SYS-RO"}, confined
    free = set(lab.ok("run", "--rm", "--privileged", "busybox", "sh", "-c", CHECKS).split())
    assert {"MOUNT-TMPFS", "LINK-ADD", "SYSCTL-WRITE", "TIMER-LIST-READABLE"} <= free, free
    assert not {"PROC-SYS-RO", "SYS-RO"} & free


def _openable_block_device() -> tuple[str, int, int]:
    """A block device of this machine (from /sys/block) that root here can open."""
    for name in sorted(os.listdir("/sys/block")):
        major, minor = (int(x) for x in Path(f"/sys/block/{name}/dev").read_text().split(":"))
        try:
            os.close(os.open(f"/dev/{name}", os.O_RDONLY))
        except OSError:
            continue
        return name, major, minor
    pytest.skip("no block device root can open on this machine")


def test_the_hosts_disk_can_be_made_but_not_opened_from_init_or_exec(lab):
    name, major, minor = _openable_block_device()
    script = f"mknod /tmp/disk b {major} {minor} && echo MADE; head -c 512 /tmp/disk >/dev/null && echo OPENED; true"
    assert lab.ok("run", "--rm", "busybox", "sh", "-c", script).split() == ["MADE"]  # 'm' is allowed, as in Docker
    lab.ok("run", "-d", "--name", "dev", "busybox", "sleep", "60")
    assert lab.ok("exec", "dev", "sh", "-c", script).split() == ["MADE"]
    # --privileged gets every device, the host's nodes included
    assert lab.ok("run", "--rm", "--privileged", "busybox", "sh", "-c",
                  f"head -c 512 /dev/{name} >/dev/null && echo OPENED").split() == ["OPENED"]


def test_exec_joins_the_inits_cgroups_and_gets_its_confinement(lab):
    cid = lab.ok("run", "-d", "--name", "box", "busybox", "sleep", "60").strip()
    mine = lab.ok("exec", "box", "cat", "/proc/self/cgroup")
    assert mine == lab.ok("exec", "box", "cat", "/proc/1/cgroup")
    assert f"memory:/{lab.cgroup_parent}/{cid[:12]}" in mine and f"devices:/{lab.cgroup_parent}/{cid[:12]}" in mine
    st = _status(lab.ok("exec", "box", "sh", "-c", STATUS))
    assert (st["CapEff"], st["CapBnd"], st["Seccomp"]) == (DEFAULT_CAPS, DEFAULT_CAPS, 2)
    assert _status(lab.ok("exec", "-u", "nobody", "box", "sh", "-c", STATUS))["CapEff"] == 0
    lab.ok("run", "-d", "--name", "admin", "--cap-add", "NET_ADMIN", "busybox", "sleep", "60")
    assert _status(lab.ok("exec", "admin", "sh", "-c", STATUS))["CapEff"] == DEFAULT_CAPS | NET_ADMIN
    lab.ok("exec", "admin", "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")  # what NET_ADMIN is for
    lab.ok("run", "-d", "--name", "bare", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "busybox", "sleep", "60")
    st = _status(lab.ok("exec", "bare", "sh", "-c", STATUS))
    assert (st["CapEff"], st["CapBnd"], st["Seccomp"], st["NoNewPrivs"]) == (0, 0, 2, 1)


def test_exec_does_not_carry_the_callers_descriptors_into_the_container(lab, tmp_path):
    (tmp_path / "host-secret").write_text("from the host\n")
    lab.ok("run", "-d", "--name", "box", "busybox", "sleep", "60")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.dup2(fd, 42)  # inheritable, as a shell's `42< DIR` would leave it
        p = lab.netdiag("exec", "box", "sh", "-c",
                        "ls /proc/self/fd; cat /proc/self/fd/42/host-secret; ls /proc/self/fd/42/../..", pass_fds=(42,))
    finally:
        os.close(42)
        os.close(fd)
    assert "from the host" not in p.stdout and "42" not in p.stdout.split(), p.stdout
    assert "No such file" in p.stderr


def test_health_checks_are_confined_like_the_init(lab):
    cid = lab.ok("run", "-d", "--name", "hc", "--health-cmd", STATUS + "; cat /proc/self/cgroup",
                 "--health-interval", "0.2", "busybox", "sleep", "60").strip()
    assert wait_for(lambda: lab.inspect("hc")["State"].get("Health", {}).get("Status") == "healthy", timeout=8.0)
    out = lab.inspect("hc")["State"]["Health"]["Log"][-1]["Output"]
    st = _status("\n".join(line for line in out.splitlines() if not line[0].isdigit()))
    assert (st["CapEff"], st["CapBnd"], st["Seccomp"]) == (DEFAULT_CAPS, DEFAULT_CAPS, 2)
    assert f"devices:/{lab.cgroup_parent}/{cid[:12]}" in out


def test_a_seccomp_profile_file_in_dockers_format(lab, tmp_path):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    (tmp_path / "p.json").write_text(json.dumps(profile, indent=2))
    p = lab.run("run", "--name", "sc", "--security-opt", f"seccomp={tmp_path / 'p.json'}", "busybox", "mkdir", "/x")
    assert p.returncode == 1 and "Permission denied" in p.stderr  # errnoRet 13 = EACCES, not the default EPERM
    info = lab.inspect("sc")
    assert info["HostConfig"]["SecurityOpt"] == ["seccomp=" + json.dumps(profile, separators=(",", ":"))]
    assert info["Confinement"]["Seccomp"] == "custom"
    (tmp_path / "p.json").unlink()  # the profile travels with the container, like Docker's
    assert lab.run("start", "-a", "sc").returncode == 1


@pytest.mark.parametrize("opts, words", [
    (["--cap-add", "NET_FOO"], "Unknown capability"),
    (["--cap-drop", "bogus"], "Unknown capability"),
    (["--security-opt", "seccomp"], "Invalid --security-opt"),
    (["--security-opt", "no-new-privileges=maybe"], "akes true or false"),
    (["--security-opt", "apparmor=docker-default"], "Unsupported --security-opt"),
    (["--security-opt", "seccomp=/no/such/profile.json"], "Cannot read seccomp profile"),
    (["--security-opt", "seccomp=/dev/zero"], "Is a device, not a regular file"),
    (["--security-opt", "seccomp=BAD_JSON"], "not valid JSON"),
    (["--security-opt", "seccomp=BAD_ACTION"], "unknown action"),
])
def test_bad_options_exit_125_before_anything_is_created(lab, tmp_path, opts, words):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "act.json").write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                                                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_SOMETIMES"}]}))
    opts = [o.replace("seccomp=BAD_JSON", f"seccomp={tmp_path / 'bad.json'}")
             .replace("seccomp=BAD_ACTION", f"seccomp={tmp_path / 'act.json'}") for o in opts]
    p = lab.run("run", "--rm", *opts, "busybox", "true")
    assert p.returncode == 125 and words in p.stderr, p.stderr  # like docker run
    assert lab.ok("ps", "-a", "-q") == ""
    assert not (lab.root / "containers").exists() or not any((lab.root / "containers").iterdir())


def test_inspect_shows_what_applies(lab):
    lab.ok("run", "-d", "--name", "confined", "--cap-add", "net_admin", "--cap-drop", "CAP_MKNOD",
           "--security-opt", "no-new-privileges", "busybox", "sleep", "60")
    info = lab.inspect("confined")
    host, conf = info["HostConfig"], info["Confinement"]
    assert (host["CapAdd"], host["CapDrop"], host["Privileged"], host["SecurityOpt"]) == \
        (["CAP_NET_ADMIN"], ["CAP_MKNOD"], False, ["no-new-privileges"])
    assert "CAP_NET_ADMIN" in conf["Capabilities"] and "CAP_MKNOD" not in conf["Capabilities"]
    assert (conf["Seccomp"], conf["NoNewPrivileges"]) == ("builtin", True)
    assert "/proc/kcore" in host["MaskedPaths"] and "/proc/sys" in host["ReadonlyPaths"]
    assert conf["DeviceCgroupRules"][0] == "deny a *:* rwm"
    lab.ok("run", "-d", "--name", "priv", "--privileged", "busybox", "sleep", "60")
    info = lab.inspect("priv")
    assert info["HostConfig"]["Privileged"] is True and info["HostConfig"]["MaskedPaths"] == []
    assert info["Confinement"]["Seccomp"] == "unconfined" and info["Confinement"]["DeviceCgroupRules"] == ["allow a *:* rwm"]
