"""Confinement logic without root: capability sets as Docker computes them, --security-opt parsing,
Docker's seccomp profile interpreted for an arch, a kernel and a capability set, and libseccomp's
program for it (loaded in a child under no_new_privs, which needs no privilege)."""
import json
import os

import pytest

from runtime.containers import seccomp, security
from runtime.errors import InvalidArgument

EVERY = [f"CAP_{n}" for n in security.CAPS]


@pytest.fixture(autouse=True)
def all_caps_available(monkeypatch):
    monkeypatch.setattr(security, "available", lambda: list(EVERY))


def mask(names):
    return sum(1 << security.CAPS.index(n[4:]) for n in names)


def test_default_set_is_dockers_fourteen():
    caps = security.capabilities()
    assert len(caps) == 14 and mask(caps) == 0xA80425FB


@pytest.mark.parametrize("add, drop, privileged, want", [
    (["NET_ADMIN"], [], False, set(security.DEFAULT_CAPS) | {"CAP_NET_ADMIN"}),
    (["cap_net_admin", "net_admin"], ["chown", "CAP_KILL"], False,
     set(security.DEFAULT_CAPS) - {"CAP_CHOWN", "CAP_KILL"} | {"CAP_NET_ADMIN"}),
    ([], ["ALL"], False, set()),
    (["NET_RAW", "SYS_TIME"], ["all"], False, {"CAP_NET_RAW", "CAP_SYS_TIME"}),
    (["ALL"], ["SYS_ADMIN"], False, set(EVERY) - {"CAP_SYS_ADMIN"}),
    ([], ["ALL"], True, set(EVERY)),  # --privileged wins, as in moby
])
def test_cap_add_and_drop_follow_moby(add, drop, privileged, want):
    assert set(security.capabilities(add, drop, privileged)) == want


def test_privileged_gets_only_what_is_available(monkeypatch):
    monkeypatch.setattr(security, "available", lambda: ["CAP_CHOWN", "CAP_NET_ADMIN"])
    assert security.capabilities(privileged=True) == ["CAP_CHOWN", "CAP_NET_ADMIN"]
    with pytest.raises(InvalidArgument, match="not available"):
        security.capabilities(["SYS_ADMIN"])


@pytest.mark.parametrize("bad", ["NET_FOO", "CAP_", "", "cap_all"])
def test_unknown_capabilities_are_bad_input(bad):
    with pytest.raises(InvalidArgument) as e:
        security.normalize_caps([bad], "--cap-add")
    assert e.value.exit_code == 2


def test_security_opts_are_checked_and_a_profile_file_is_inlined(tmp_path):
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "mkdir", "action": "SCMP_ACT_ERRNO"}]}
    (tmp_path / "p.json").write_text(json.dumps(prof, indent=4))
    out = security.parse_security_opts(["no-new-privileges", "no-new-privileges:true", f"seccomp={tmp_path}/p.json",
                                        "seccomp=unconfined", "systempaths=unconfined"])
    assert out[2] == "seccomp=" + json.dumps(prof, separators=(",", ":"))
    assert out[:2] == ["no-new-privileges", "no-new-privileges:true"] and out[3:] == ["seccomp=unconfined", "systempaths=unconfined"]
    for bad in ("seccomp", "seccomp=", "no-new-privileges=perhaps", "label=disable", "nonsense=1", f"seccomp={tmp_path}/none.json"):
        with pytest.raises(InvalidArgument):
            security.parse_security_opts([bad])


def test_a_seccomp_profile_that_is_no_file_or_too_deep_is_refused_by_name(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # opened without blocking, then refused
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "big.json").write_text(" " * (8 << 20) + "{}")
    for name, says in (("/dev/zero", "/dev/zero. Is a device, not a regular file"), ("fifo", "Is a FIFO, not a regular file"),
                       ("deep.json", "is nested more than 64 levels deep"), ("big.json", "larger than 4 MiB")):
        path = name if name.startswith("/") else tmp_path / name
        with pytest.raises(InvalidArgument, match="(Cannot read s|S)eccomp profile") as e:
            security.parse_security_opts([f"seccomp={path}"])
        assert says.lower() in str(e.value).lower() and e.value.exit_code == 2


def test_host_config_fields_have_dockers_names_and_privileged_unmasks():
    hc = security.host_config(["net_admin"], [], False, ["no-new-privileges"])
    assert (hc["CapAdd"], hc["CapDrop"], hc["Privileged"], hc["SecurityOpt"]) == (["CAP_NET_ADMIN"], None, False, ["no-new-privileges"])
    assert "/proc/kcore" in hc["MaskedPaths"] and hc["ReadonlyPaths"] == list(security.READONLY_PATHS)
    for hc in (security.host_config(privileged=True), security.host_config(security_opt=["systempaths=unconfined"])):
        assert hc["MaskedPaths"] == [] and hc["ReadonlyPaths"] == []


@pytest.mark.parametrize("host, kind", [
    ({}, "builtin"),
    ({"Privileged": True}, "unconfined"),
    ({"SecurityOpt": ["seccomp=unconfined"]}, "unconfined"),
    ({"Privileged": True, "SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']}, "custom"),  # moby: an explicit profile applies
])
def test_which_seccomp_profile_applies(host, kind):
    assert security.seccomp_profile(host)[0] == kind


def test_devices_default_deny_then_dockers_and_runcs_allow_list():
    rules = security.devices({})
    assert rules[0] == (False, "a *:* rwm")
    allowed = {r for a, r in rules if a}
    assert {"c *:* m", "b *:* m", "c 1:3 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm"} <= allowed
    assert not any(r.startswith("b ") and r != "b *:* m" for r in allowed)  # no block device beyond mknod
    assert security.devices({"Privileged": True}) == ((True, "a *:* rwm"),)


# -- the profile -----------------------------------------------------------------------------------

def _names(flt, action="SCMP_ACT_ALLOW"):
    return {n for r in flt.rules if r.action == action and not r.args for n in r.names}


def test_default_profile_for_default_caps_on_amd64():
    flt = seccomp.resolve(seccomp.default_profile(), set(security.DEFAULT_CAPS), "amd64", "SCMP_ARCH_X86_64", (6, 1))
    assert (flt.default_action, flt.default_errno) == ("SCMP_ACT_ERRNO", 1)
    assert flt.arches == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    allowed = _names(flt)
    assert {"read", "execve", "arch_prctl", "ptrace", "chroot"} <= allowed
    assert not {"mount", "unshare", "setns", "bpf", "reboot", "init_module", "kexec_load"} & allowed
    clone3 = [r for r in flt.rules if r.names == ("clone3",)]
    assert [(r.action, r.errno) for r in clone3] == [("SCMP_ACT_ERRNO", 38)]  # ENOSYS: glibc falls back to clone
    clone = [r for r in flt.rules if r.names == ("clone",)]
    assert [r.args for r in clone] == [((0, 2114060288, 0, "SCMP_CMP_MASKED_EQ"),)]  # no namespace flags


def test_cap_sys_admin_unlocks_its_syscalls_and_drops_the_clone_restrictions():
    caps = set(security.DEFAULT_CAPS) | {"CAP_SYS_ADMIN"}
    flt = seccomp.resolve(seccomp.default_profile(), caps, "amd64", "SCMP_ARCH_X86_64", (6, 1))
    assert {"mount", "unshare", "setns", "clone", "clone3"} <= _names(flt)
    assert not [r for r in flt.rules if r.names == ("clone3",) and r.action == "SCMP_ACT_ERRNO"]


def test_arch_and_kernel_conditions():
    prof = seccomp.default_profile()
    arm = seccomp.resolve(prof, set(security.DEFAULT_CAPS), "arm64", "SCMP_ARCH_AARCH64", (6, 1))
    assert arm.arches == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert "arch_prctl" not in _names(arm) and "arm_fadvise64_64" in _names(arm)
    old = seccomp.resolve(prof, set(security.DEFAULT_CAPS), "amd64", "SCMP_ARCH_X86_64", (4, 4))
    assert "ptrace" not in _names(old)  # minKernel 4.8
    s390 = seccomp.resolve(prof, set(), "s390x", "SCMP_ARCH_S390X", (6, 1))
    assert [r.args for r in s390.rules if r.names == ("clone",)] == [((1, 2114060288, 0, "SCMP_CMP_MASKED_EQ"),)]


def test_custom_profiles_old_name_field_and_no_rules():
    flt = seccomp.resolve({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "mkdir", "action": "SCMP_ACT_ERRNO"}]},
                          set(), "amd64", "SCMP_ARCH_X86_64", (6, 1))
    assert flt.rules == (seccomp.Rule(("mkdir",), "SCMP_ACT_ERRNO", 1),) and flt.arches == ()
    assert seccomp.resolve({}, set(), "amd64", "SCMP_ARCH_X86_64", (6, 1)) is None


@pytest.mark.parametrize("profile, words", [
    ([], "JSON object"),
    ({"defaultAction": "SCMP_ACT_MAYBE"}, "unknown defaultAction"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "seccomp agent"),
    ({"architectures": ["SCMP_ARCH_X86_64"], "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, "both"),
    ({"architectures": ["SCMP_ARCH_Z80"]}, "unknown architecture"),
    ({"syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]}, "both 'name' and 'names'"),
    ({"syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}, "index"),
    ({"syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "EQ"}]}]}, "op"),
    ({"syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}]}, "errno"),
    ({"syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "four"}}]}, "minKernel"),
])
def test_invalid_profiles_are_named(profile, words):
    with pytest.raises(seccomp.ProfileError, match=words):
        seccomp.validate(profile)


def test_the_default_profile_is_valid():
    seccomp.validate(seccomp.default_profile())


# -- libseccomp ------------------------------------------------------------------------------------


def test_the_program_is_cached_by_rules(tmp_path, monkeypatch):
    flt = seccomp.resolve(seccomp.default_profile(), set(security.DEFAULT_CAPS))
    first = seccomp.bpf(flt, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    monkeypatch.setattr(seccomp, "compile_bpf", lambda f: pytest.fail("compiled again"))
    assert seccomp.bpf(flt, tmp_path) == first
    other = seccomp.resolve(seccomp.default_profile(), set(security.DEFAULT_CAPS) | {"CAP_SYS_ADMIN"})
    assert other.key() != flt.key()


