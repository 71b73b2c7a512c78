"""`run -v`: bind mounts (directories and files, read-only or not) and named volumes that outlive
their containers, in a lab. Nothing is mounted on the lab's host side: the container's own mount
namespace holds the binds."""
import json

import pytest

pytestmark = pytest.mark.integration


def test_bind_mounts_a_directory_and_a_file_and_ro_refuses_writes(lab, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "in.txt").write_text("from host\n")
    conf = tmp_path / "app.conf"
    conf.write_text("setting=1\n")
    p = lab.run("run", "--rm", "-v", f"{share}:/data", "-v", f"{conf}:/etc/app.conf:ro", "busybox", "sh", "-c",
                "cat /data/in.txt /etc/app.conf; echo back > /data/out.txt; echo x >> /etc/app.conf || echo refused")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["from host", "setting=1", "refused"]
    assert (share / "out.txt").read_text() == "back\n"
    assert conf.read_text() == "setting=1\n"


def test_a_named_volume_keeps_its_data_across_containers_and_is_refused_while_used(lab):
    lab.ok("run", "--name", "vw", "-v", "data:/var/data", "busybox", "sh", "-c", "echo kept > /var/data/f")
    assert lab.ok("run", "--rm", "-v", "data:/d:ro", "busybox", "cat", "/d/f") == "kept\n"
    assert (lab.root / "volumes" / "data" / "_data" / "f").read_text() == "kept\n"
    mounts = json.loads(lab.ok("inspect", "vw"))[0]["Mounts"]
    assert mounts == [{"Type": "volume", "Name": "data", "Source": str(lab.root / "volumes" / "data" / "_data"),
                       "Destination": "/var/data", "RW": True, "Mode": "", "Propagation": "rprivate", "Driver": "local"}]


@pytest.mark.parametrize("spec", ["data:relative", "/a:/b:rx", "bad name!:/x", "/x:/"])
def test_a_bad_volume_spec_is_refused_before_anything_exists(lab, spec):
    p = lab.run("run", "--rm", "-v", spec, "busybox", "true")
    assert p.returncode == 125 and "volume" in p.stderr.lower(), p.stderr
    assert lab.ok("ps", "-a", "--format", "{{.Names}}") == ""


def test_restart_policies_restart_failures_up_to_their_limit_and_never_a_stopped_container(lab):
    from tests.labkit import wait_for

    lab.ok("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3")
    assert wait_for(lambda: lab.inspect("flaky")["RestartCount"] == 2 and lab.inspect("flaky")["State"]["Status"] == "exited", 15)
    assert lab.ok("logs", "flaky").splitlines() == ["run"] * 3  # the first run and two restarts
    assert lab.inspect("flaky")["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}

    lab.ok("run", "-d", "--name", "svc", "--restart", "always", "busybox", "sh", "-c", "sleep 0.2; exit 0")
    assert wait_for(lambda: lab.inspect("svc")["RestartCount"] >= 2, 15)
    lab.ok("stop", "-t", "1", "svc")
    count = lab.inspect("svc")["RestartCount"]
    import time

    time.sleep(2)
    assert lab.inspect("svc")["State"]["Status"] == "exited" and lab.inspect("svc")["RestartCount"] == count
    p = lab.run("run", "--rm", "--restart", "always", "busybox", "true")
    assert p.returncode == 125 and "Conflicting options" in p.stderr


def test_an_anonymous_volume_goes_with_its_rm_container_and_stays_with_others(lab):
    lab.ok("run", "--rm", "-v", "/scratch", "busybox", "sh", "-c", "echo x > /scratch/f")
    volumes = lab.root / "volumes"
    assert not volumes.exists() or list(volumes.iterdir()) == []
    lab.ok("run", "--name", "keeper", "-v", "/scratch", "busybox", "true")
    (vol,) = [m for m in lab.inspect("keeper")["Mounts"]]
    assert len(vol["Name"]) == 64 and (lab.root / "volumes" / vol["Name"] / "_data").is_dir()


def test_an_image_link_at_the_destination_never_sends_the_mount_to_the_host(lab, tmp_path):
    """The image's /data links far up and out (../../../..): the bind is resolved inside the
    container's root, so it lands on the root's own /escaped-here, never on the host's."""
    import secrets

    target = f"/tmp/netdiag-escape-{secrets.token_hex(4)}"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN ln -s ../../../../../../..{target} /data\n")
    lab.ok("build", "-q", "-t", "linky", str(ctx), timeout=120)
    share = tmp_path / "share"
    share.mkdir()
    (share / "f").write_text("shared\n")
    out = lab.ok("run", "--rm", "-v", f"{share}:/data", "linky", "sh", "-c", f"cat {target}/f; touch {target}/g")
    assert out == "shared\n" and (share / "g").exists()
    import os

    assert not os.path.lexists(target)  # nothing was made or mounted on the host's side
