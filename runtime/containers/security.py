"""Docker's default confinement for every process of a container: its init, `exec` and health checks.

- Capabilities: Docker's 14 (moby daemon/pkg/oci/caps/defaults.go), tweaked by --cap-add/--cap-drop
  as moby's TweakCapabilities does, all of them with --privileged. They become the bounding,
  permitted and effective sets; inheritable and ambient are emptied (as containerd and runc do
  since CVE-2022-24769), so a non-root USER ends with no effective capabilities after execve, like
  in Docker.
- seccomp: Docker's default profile (seccomp.py) unless --privileged or seccomp=unconfined; a
  profile file given with --security-opt seccomp=FILE is stored in SecurityOpt (Docker's CLI sends
  the file's content too), so the container does not depend on the file afterwards.
- no_new_privs only with --security-opt no-new-privileges. Without it, loading the filter needs
  CAP_SYS_ADMIN, so it happens before the capabilities drop (runc's order); with it, last.
- Masked and read-only paths of /proc and /sys (moby daemon/pkg/oci/defaults.go), and the devices
  cgroup allow-list (moby's defaults plus runc's AllowedDevices), none of them with --privileged.
"""
from __future__ import annotations

import ctypes
import json
import os
import stat
from collections import namedtuple  # not typing.NamedTuple: typing costs every `run` ~3 ms of imports

from .. import bounded, paths
from ..errors import InvalidArgument
from ..kernel.syscalls import libc, prctl

CAPS = ("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE")  # index = capability number (linux/capability.h)
DEFAULT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")

MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
                "/sys/devices/virtual/powercap", "/sys/firmware")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# (allow, rule) in order: moby's spec defaults, then runc's AllowedDevices appended after them
DEFAULT_DEVICES = ((False, "a *:* rwm"), (True, "c 1:5 rwm"), (True, "c 1:3 rwm"), (True, "c 1:9 rwm"),
                   (True, "c 1:8 rwm"), (True, "c 5:0 rwm"), (True, "c 5:1 rwm"), (False, "c 10:229 rwm"),
                   (True, "c *:* m"), (True, "b *:* m"), (True, "c 1:3 rwm"), (True, "c 1:8 rwm"),
                   (True, "c 1:7 rwm"), (True, "c 5:0 rwm"), (True, "c 1:5 rwm"), (True, "c 1:9 rwm"),
                   (True, "c 136:* rwm"), (True, "c 5:2 rwm"), (True, "c 10:200 rwm"))
ALL_DEVICES = ((True, "a *:* rwm"),)

_PR_CAPBSET_DROP, _PR_SET_KEEPCAPS, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 8, 38, 47, 4
_CAP_V3 = 0x20080522


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPS) - 1


def available() -> list[str]:
    """The capabilities this process has (CapEff), which is what a container can get: moby reads
    the same (containerd's cap.Current) so that --privileged never asks for more than there is."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        eff = (1 << len(CAPS)) - 1
    return [f"CAP_{n}" for i, n in enumerate(CAPS) if eff >> i & 1]


# -- options, validated before anything is created ------------------------------------------------

def normalize_caps(names, flag: str) -> list[str]:
    """CAP_-prefixed upper-case names (ALL kept), as moby's NormalizeLegacyCapabilities."""
    out, have = [], None
    for raw in names or []:
        name = str(raw).strip().upper()
        if name != "ALL" and not name.startswith("CAP_"):
            name = "CAP_" + name
        if name != "ALL":
            if name[4:] not in CAPS:
                raise InvalidArgument(f"Unknown capability {raw!r} in {flag}", "it is not a Linux capability",
                                      "use a name like NET_ADMIN or CAP_NET_ADMIN (see capabilities(7)), or ALL")
            have = have if have is not None else available()
            if name not in have:
                raise InvalidArgument(f"Capability {name} in {flag} is not available",
                                      "this kernel or the environment netdiag runs in does not give it",
                                      "drop it from the option")
        if name not in out:
            out.append(name)
    return out


def capabilities(cap_add=(), cap_drop=(), privileged: bool = False) -> list[str]:
    """The container's capability set (moby's TweakCapabilities)."""
    every = available()
    if privileged:
        return every
    add, drop = normalize_caps(cap_add, "--cap-add"), normalize_caps(cap_drop, "--cap-drop")
    if "ALL" in add:
        return [c for c in every if c not in drop]
    if "ALL" in drop:
        return [c for c in add if c != "ALL"]
    return [c for c in DEFAULT_CAPS if c not in drop] + [c for c in add if c not in DEFAULT_CAPS]


def parse_security_opts(opts) -> list[str]:
    """Docker's --security-opt values, checked; seccomp=FILE becomes seccomp=<the file's JSON>."""
    from . import seccomp

    out = []
    for opt in opts or []:
        key, sep, value = opt.partition("=")
        if not sep and key != "no-new-privileges":
            key, sep, value = opt.partition(":")  # the old KEY:VALUE form
        if key == "no-new-privileges":
            _bool(value, opt)
        elif key == "seccomp" and value:
            if value not in ("unconfined", "builtin"):
                try:
                    profile = bounded.load_json(value, bounded.MAX_JSON)
                except bounded.Refused as e:
                    if e.line is None:  # missing, a FIFO or device, too large
                        raise InvalidArgument(f"Cannot read seccomp profile {value}", e.problem,
                                              "give the path of a JSON profile in Docker's format") from None
                    raise InvalidArgument(f"Seccomp profile {value} is {e.problem}", "",
                                          "fix the file; Docker's default.json is an example") from None
                try:
                    seccomp.validate(profile)
                except seccomp.ProfileError as e:
                    raise InvalidArgument(f"Invalid seccomp profile {value}", str(e),
                                          "fix the profile (Docker's format: defaultAction, archMap, syscalls)") from None
                opt = "seccomp=" + json.dumps(profile, separators=(",", ":"))
        elif key == "systempaths" and value == "unconfined":
            pass
        elif key in ("apparmor", "label"):
            raise InvalidArgument(f"Unsupported --security-opt {opt!r}", f"netdiag has no {key} (LSM) confinement",
                                  "drop the option")
        else:
            raise InvalidArgument(f"Invalid --security-opt {opt!r}",
                                  "the options are seccomp=unconfined|builtin|FILE, no-new-privileges[=true|false] "
                                  "and systempaths=unconfined", "fix or drop the option")
        out.append(opt)
    return out


def _bool(value: str, opt: str) -> bool:
    if value in ("", "1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise InvalidArgument(f"Invalid --security-opt {opt!r}", "no-new-privileges takes true or false",
                          "use --security-opt no-new-privileges")


def host_config(cap_add=(), cap_drop=(), privileged: bool = False, security_opt=()) -> dict:
    """HostConfig fields with Docker's names (CapAdd, CapDrop, Privileged, SecurityOpt, MaskedPaths,
    ReadonlyPaths), validated; raises InvalidArgument before anything exists."""
    add, drop = normalize_caps(cap_add, "--cap-add"), normalize_caps(cap_drop, "--cap-drop")
    opts = parse_security_opts(security_opt)
    unconfined_paths = privileged or "systempaths=unconfined" in opts
    return {
        "CapAdd": add or None,
        "CapDrop": drop or None,
        "Privileged": bool(privileged),
        "SecurityOpt": opts or None,
        "MaskedPaths": [] if unconfined_paths else masked_paths(),
        "ReadonlyPaths": [] if unconfined_paths else list(READONLY_PATHS),
    }


def masked_paths() -> list[str]:
    """moby's list, plus each CPU's thermal_throttle directory where the host has one."""
    out = list(MASKED_PATHS)
    base = "/sys/devices/system/cpu"
    try:
        cpus = sorted((d for d in os.listdir(base) if d.startswith("cpu") and d[3:].isdigit()), key=lambda d: int(d[3:]))
    except OSError:
        cpus = []
    out += [f"{base}/{d}/thermal_throttle" for d in cpus if os.path.exists(f"{base}/{d}/thermal_throttle")]
    return out


# -- what applies to a container (from its HostConfig) -------------------------------------------

def _opts(host: dict) -> dict:
    seccomp_opt, nnp = None, False
    for opt in host.get("SecurityOpt") or []:
        key, sep, value = opt.partition("=")
        if not sep and key != "no-new-privileges":
            key, _, value = opt.partition(":")
        if key == "no-new-privileges":
            nnp = _bool(value, opt)
        elif key == "seccomp":
            seccomp_opt = value
    return {"seccomp": seccomp_opt, "nnp": nnp}


def cap_set(host: dict) -> list[str]:
    return capabilities(host.get("CapAdd"), host.get("CapDrop"), bool(host.get("Privileged")))


def seccomp_profile(host: dict) -> tuple[str, dict | None]:
    """(what it is, the profile or None): Docker's rules for when seccomp applies."""
    from . import seccomp

    chosen = _opts(host)["seccomp"]
    if chosen == "unconfined" or (host.get("Privileged") and chosen in (None, "builtin")):
        return "unconfined", None
    if chosen in (None, "builtin"):
        return "builtin", seccomp.default_profile()
    return "custom", json.loads(chosen)


def devices(host: dict) -> tuple[tuple[bool, str], ...]:
    return ALL_DEVICES if host.get("Privileged") else DEFAULT_DEVICES


class Plan(namedtuple("Plan", "caps seccomp_bpf no_new_privs")):
    """What a process of the container gets: computed before fork, applied in the child. caps: a
    tuple of capability numbers; seccomp_bpf: the program (bytes) or None; no_new_privs: bool."""

    __slots__ = ()


def plan(host: dict) -> Plan:
    from . import seccomp

    names = cap_set(host)
    _, profile = seccomp_profile(host)
    program = None
    if profile is not None:
        flt = seccomp.resolve(profile, set(names))
        if flt is not None:
            program = seccomp.bpf(flt, paths.root() / "cache" / "seccomp")
    return Plan(tuple(CAPS.index(n[4:]) for n in names), program, _opts(host)["nnp"])


def describe(host: dict) -> dict:
    """For `inspect`: the confinement that applies, spelled out."""
    kind, _ = seccomp_profile(host)
    return {
        "Capabilities": cap_set(host),
        "Seccomp": kind,
        "NoNewPrivileges": _opts(host)["nnp"],
        "MaskedPaths": host.get("MaskedPaths", [] if host.get("Privileged") else masked_paths()),
        "ReadonlyPaths": host.get("ReadonlyPaths", [] if host.get("Privileged") else list(READONLY_PATHS)),
        "DeviceCgroupRules": [("allow " if allow else "deny ") + rule for allow, rule in devices(host)],
    }


# -- in the child, just before exec ---------------------------------------------------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capset(mask: int) -> None:
    header = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective, data[i].permitted, data[i].inheritable = word, word, 0
    if libc.capset(ctypes.byref(header), data) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def enter(p: Plan, uid: int, gid: int, groups: list[int]) -> None:
    """Become the container's process: no_new_privs, seccomp, capabilities, then the user."""
    from . import seccomp

    if p.no_new_privs:
        prctl(_PR_SET_NO_NEW_PRIVS, 1, what="no_new_privs")
    if p.seccomp_bpf is not None and not p.no_new_privs:
        seccomp.load(p.seccomp_bpf)  # needs CAP_SYS_ADMIN: before the drop
    keep = set(p.caps)
    for cap in range(last_cap() + 1):
        if cap not in keep:
            prctl(_PR_CAPBSET_DROP, cap, what=f"dropping capability {cap} from the bounding set")
    prctl(_PR_SET_KEEPCAPS, 1, what="keepcaps")  # the permitted set survives the change of uid
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    prctl(_PR_SET_KEEPCAPS, 0, what="keepcaps")
    _capset(sum(1 << c for c in keep))
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, what="ambient capabilities")
    if p.seccomp_bpf is not None and p.no_new_privs:
        seccomp.load(p.seccomp_bpf)  # last: the fewest syscalls run under the filter before exec


# -- in the container's init, after pivot_root ----------------------------------------------------

_SKIP_DEV = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev", "console"}


def host_devices() -> list[tuple[str, int, int, int, int]]:
    """(path below /dev, mode, rdev, uid, gid) of the host's device nodes, read before pivot_root
    (--privileged gets them all, like Docker's HostDevices)."""
    out = []

    def walk(d: str, rel: str) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if e.name in _SKIP_DEV and not rel:
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                walk(e.path, f"{rel}{e.name}/")
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append((rel + e.name, st.st_mode, st.st_rdev, st.st_uid, st.st_gid))

    walk("/dev", "")
    return out


def apply_paths(host: dict, devs: list[tuple[str, int, int, int, int]] = ()) -> None:
    """Mask and make read-only what Docker does (none with --privileged, which gets a writable
    /sys and the host's devices instead). Paths the kernel lacks are skipped, like runc."""
    from ..kernel import syscalls as sc

    if host.get("Privileged"):
        flags = os.statvfs("/sys").f_flag & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        sc.mount(None, "/sys", None, sc.MS_REMOUNT | flags)  # the superblock too: a fresh sysfs was made read-only
        for rel, mode, rdev, uid, gid in devs:
            target = f"/dev/{rel}"
            if os.path.lexists(target):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.mknod(target, mode, rdev)
            os.chown(target, uid, gid)
            os.chmod(target, stat.S_IMODE(mode))
    for path in host.get("MaskedPaths", [] if host.get("Privileged") else masked_paths()):
        try:
            if os.path.isdir(path):
                sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
            else:
                sc.mount("/dev/null", path, None, sc.MS_BIND)
        except FileNotFoundError:
            continue
    for path in host.get("ReadonlyPaths", [] if host.get("Privileged") else list(READONLY_PATHS)):
        try:
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
        except FileNotFoundError:
            continue
        flags = os.statvfs(path).f_flag & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        sc.mount(None, path, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_REC | flags)
