"""libseccomp's program for a profile, loaded for real in forked children: it refuses what the
profile refuses, with the profile's errno. (The profile interpretation is tested pure, in
tests/unit/test_security.py.)"""
import errno
import os

import pytest

from runtime.containers import seccomp, security

pytestmark = pytest.mark.integration


def _in_child(action, program: bytes | None) -> int:
    """In a child: no_new_privs (so no privilege is needed), load the program, run `action`; 0 or its errno."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 100
        try:
            security.prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
            if program is not None:
                seccomp.load(program)
            action()
            code = 0
        except OSError as e:
            code = e.errno
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_libseccomp_program_does_what_the_profile_says(tmp_path):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat", "no_such_syscall_anywhere"], "action": "SCMP_ACT_ERRNO",
                             "errnoRet": errno.EXDEV}]}
    program = seccomp.bpf(seccomp.resolve(profile, set()), tmp_path / "cache")
    assert program and len(program) % 8 == 0
    mkdir = lambda: os.mkdir(tmp_path / "d")  # noqa: E731
    assert _in_child(mkdir, program) == errno.EXDEV and not (tmp_path / "d").exists()
    assert _in_child(mkdir, None) == 0 and (tmp_path / "d").is_dir()


def test_default_profile_refuses_a_new_user_namespace_with_eperm():
    from runtime.kernel import syscalls

    new_userns = lambda: syscalls.unshare(0x10000000)  # noqa: E731 - CLONE_NEWUSER: needs no privilege by itself
    if _in_child(new_userns, None) != 0:
        pytest.skip("this kernel refuses unprivileged user namespaces anyway")
    program = seccomp.compile_bpf(seccomp.resolve(seccomp.default_profile(), set(security.DEFAULT_CAPS)))
    assert _in_child(new_userns, program) == errno.EPERM
