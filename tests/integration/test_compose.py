"""`netdiag compose` in a lab: Docker Compose's names and labels, service names and aliases that
resolve on the project's networks, depends_on waiting for health, volumes, and an `up` that fails
leaving nothing of what it made."""
import json
import textwrap

import pytest

pytestmark = pytest.mark.integration

STACK = """
services:
  web:
    image: busybox
    command: httpd -f -p 80 -h /www
    ports: ["8080:80"]
    volumes: ["./www:/www:ro"]
    depends_on:
      app: {condition: service_healthy}
    networks: [front]
  app:
    image: busybox
    command: ["sh", "-c", "echo app-data > /data/f; echo started; exec httpd -f -p 8080 -h /data"]
    environment: {ROLE: "${ROLE:-backend}"}
    restart: unless-stopped
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/f"]
      interval: 1s
      retries: 10
    volumes: ["data:/data"]
    networks:
      front:
        aliases: [api]
      default: {}
networks:
  front: {}
volumes:
  data: {}
"""


def _stack(tmp_path, text=STACK, name="Shop"):
    d = tmp_path / name
    (d / "www").mkdir(parents=True)
    (d / "www" / "index.html").write_text("front page\n")
    (d / "compose.yaml").write_text(textwrap.dedent(text))
    return d / "compose.yaml"


def test_up_names_labels_dns_volumes_then_down_leaves_nothing(lab, tmp_path):
    f = str(_stack(tmp_path))
    p = lab.run("compose", "up", "-d", "-f", f, timeout=90)
    assert p.returncode == 0, p.stderr
    assert "Network shop_front Created" in p.stderr and "Container shop-app-1 Healthy" in p.stderr

    rows = [json.loads(line) for line in lab.ok("compose", "ps", "-f", f, "--format", "json").splitlines()]
    assert [(r["Name"], r["Service"], r["State"]) for r in rows] == [("shop-app-1", "app", "running"), ("shop-web-1", "web", "running")]
    app = lab.inspect("shop-app-1")
    labels = app["Config"]["Labels"]
    assert (labels["com.docker.compose.project"], labels["com.docker.compose.service"], labels["com.docker.compose.container-number"]) == ("shop", "app", "1")
    assert sorted(app["NetworkSettings"]["Networks"]) == ["shop_default", "shop_front"]
    assert "ROLE=backend" in app["Config"]["Env"]
    assert app["HostConfig"]["RestartPolicy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    net = json.loads(lab.ok("network", "inspect", "shop_front"))[0]
    assert net["Labels"] == {"com.docker.compose.project": "shop", "com.docker.compose.network": "front"}

    # the service name, the alias and the container name resolve on the shared network
    for host in ("app", "api", "shop-app-1"):
        got = lab.run("exec", "shop-web-1", "timeout", "5", "wget", "-q", "-O", "-", f"http://{host}:8080/f")
        assert got.stdout == "app-data\n", (host, got.stderr)
    assert lab.lab_get("http://127.0.0.1:8080/").stdout == "front page\n"  # the published port, the bind mount
    assert (lab.root / "volumes" / "shop_data" / "_data" / "f").read_text() == "app-data\n"
    assert "shop-app-1  | started" in lab.ok("compose", "logs", "-f", f, "app")

    # diagnosis takes the stack's service names (web, app-1) for its containers
    trace = lab.run("trace", "web", "app-1", "--port", "8080", "--json", timeout=120)
    assert trace.returncode == 0, trace.stdout + trace.stderr
    assert json.loads(trace.stdout)["verdict"] == "delivered"

    # a second up changes nothing that is running
    again = lab.run("compose", "up", "-d", "-f", f, timeout=60)
    assert again.returncode == 0 and "Container shop-web-1 Running" in again.stderr, again.stderr
    assert lab.inspect("shop-app-1")["Id"] == app["Id"]

    p = lab.run("compose", "down", "-v", "-t", "1", "-p", "shop", timeout=60)
    assert p.returncode == 0, p.stderr
    assert lab.ok("ps", "-a", "--format", "{{.Names}}") == ""
    assert not [n for n in lab.ok("network", "ls", "--format", "{{.Name}}").split() if n.startswith("shop_")]
    assert not (lab.root / "volumes" / "shop_data").exists()


def test_a_failed_up_removes_what_it_made(lab, tmp_path):
    f = str(_stack(tmp_path, STACK.replace('"http://127.0.0.1:8080/f"', '"http://127.0.0.1:8080/missing"')
                   .replace("retries: 10", "retries: 2"), name="broken"))
    p = lab.run("compose", "up", "-d", "-f", f, timeout=90)
    assert p.returncode == 1, p.stderr
    assert "dependency failed to start: container broken-app-1 is unhealthy" in p.stderr
    assert lab.ok("ps", "-a", "--format", "{{.Names}}") == ""
    assert not [n for n in lab.ok("network", "ls", "--format", "{{.Name}}").split() if n.startswith("broken_")]
    assert not (lab.root / "volumes" / "broken_data").exists()


def test_a_bad_file_is_refused_with_its_line_before_anything_exists(lab, tmp_path):
    f = _stack(tmp_path, STACK.replace("    ports: [\"8080:80\"]", "    ports: [\"80800:80\"]"), name="bad")
    p = lab.run("compose", "up", "-d", "-f", str(f))
    assert p.returncode == 2
    assert p.stderr.startswith(f"netdiag: error: {f}:6: services.web.ports[0]: "), p.stderr
    assert lab.ok("network", "ls", "--format", "{{.Name}}").split() == ["host", "none"]


def test_attached_up_prints_each_containers_log_and_ctrl_c_stops_the_stack(lab, tmp_path):
    import signal
    import subprocess
    import threading

    from tests.labkit import wait_for

    f = _stack(tmp_path, """
        services:
          talker:
            image: busybox
            command: [sh, -c, "echo hello from talker; exec sleep 600"]
          loner:
            image: busybox
            network_mode: none
            command: [sh, -c, "ip -o link | grep -c . ; exec sleep 600"]
        """, name="attached")

    errfile = (tmp_path / "up.err").open("w")  # a file, not a pipe: nothing left holding it can block the test
    p = lab.popen("compose", "-f", str(f), "up", stdout=subprocess.PIPE, stderr=errfile, text=True)
    lines: list[str] = []

    def read() -> None:
        for line in p.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:  # Ctrl-C once both logs are shown: up is done and following them (earlier, it would roll back)
        assert wait_for(lambda: {"attached-talker-1  | hello from talker\n", "attached-loner-1   | 1\n"} <= set(lines), 60), lines
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(5)
    errfile.close()
    err = (tmp_path / "up.err").read_text()
    assert "Container attached-talker-1 Stopped" in err
    assert lab.ok("compose", "-p", "attached", "ps", "-a", "--format", "{{.Name}} {{.State}}") == \
        "attached-loner-1 exited\nattached-talker-1 exited\n"
    lab.ok("compose", "-p", "attached", "down")


def test_a_service_with_build_gets_its_image_built_once_and_rebuilt_with_build(lab, tmp_path):
    f = _stack(tmp_path, """
        services:
          site:
            build: ./site
            ports: ["8081:80"]
        """, name="built")
    site = f.parent / "site"
    site.mkdir()
    (site / "index.html").write_text("built page\n")
    (site / "Dockerfile").write_text("FROM busybox\nCOPY index.html /www/\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n")
    p = lab.run("compose", "-f", str(f), "up", "-d", timeout=120)
    assert p.returncode == 0 and "Image built-site Built" in p.stderr, p.stderr
    assert lab.lab_get("http://127.0.0.1:8081/").stdout == "built page\n"
    assert "Building" not in lab.run("compose", "-f", str(f), "up", "-d").stderr  # the image exists now
    (site / "index.html").write_text("rebuilt page\n")
    p = lab.run("compose", "-f", str(f), "up", "-d", "--build", timeout=120)
    assert p.returncode == 0 and "Image built-site Built" in p.stderr, p.stderr
    assert "Container built-site-1 Removed (its service or image changed)" in p.stderr  # a new image: a new container
    assert lab.lab_get("http://127.0.0.1:8081/").stdout == "rebuilt page\n"
    lab.ok("compose", "-f", str(f), "down", "-t", "1")


def test_real_world_keys_reach_the_container(lab, tmp_path):
    """env_file, extra_hosts, tmpfs, net.* sysctls, read_only, stdin_open, stop_signal and
    stop_grace_period, as the container's own process sees them; profiles leave a service out."""
    import time

    f = _stack(tmp_path, """
        services:
          box:
            image: busybox
            stdin_open: true
            tty: true
            env_file: [app.env, {path: local.env, required: false}]
            environment: {OVERRIDDEN: by-environment}
            extra_hosts: ["db.local:10.1.2.3"]
            tmpfs: ["/scratch:size=4m,mode=0700"]
            read_only: true
            sysctls: {net.ipv4.ip_unprivileged_port_start: 80, net.ipv4.conf.eth0.rp_filter: 2}
            stop_signal: SIGKILL
            stop_grace_period: 30s
            deploy: {resources: {limits: {pids: 40}}}
          tools:
            image: busybox
            profiles: [debug]
        """, name="real")
    (f.parent / "app.env").write_text('GREETING="hello \\"world\\""  \nOVERRIDDEN=by-file\n')
    p = lab.run("compose", "up", "-d", "-f", str(f), timeout=90)
    assert p.returncode == 0, p.stderr
    assert "real-tools-1" not in p.stderr  # its profile is not active

    def sh(script: str):
        return lab.run("exec", "real-box-1", "sh", "-c", script)

    assert lab.inspect("real-box-1")["State"]["Status"] == "running"  # sh with no command waits on its open stdin
    assert sh("echo $GREETING/$OVERRIDDEN").stdout == 'hello "world"/by-environment\n'
    assert "10.1.2.3\tdb.local\n" in sh("cat /etc/hosts").stdout
    assert sh("grep ' /scratch ' /proc/mounts").stdout.split()[2:4] == ["tmpfs", "rw,nosuid,nodev,noexec,relatime,size=4096k,mode=700"]
    assert sh("cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/conf/eth0/rp_filter").stdout == "80\n2\n"
    assert lab.in_lab("cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").stdout == "1024\n"  # the lab host's own is untouched
    refused = sh("touch /made-here")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert sh("touch /scratch/ok && echo written").stdout == "written\n"

    started = time.monotonic()  # SIGKILL as its stop signal: down does not wait out the 30 s grace period
    assert lab.run("compose", "-f", str(f), "down", timeout=60).returncode == 0
    assert time.monotonic() - started < 15
    assert lab.ok("ps", "-a", "--format", "{{.Names}}") == ""


def test_init_forwards_the_stop_signal_and_returns_the_programs_status(lab, tmp_path):
    """init: true puts a PID 1 in front of the program, like Docker's tini: `sleep` (which, as PID 1,
    would ignore SIGTERM and hold `down` for the whole grace period) is stopped by the forwarded
    signal at once, and its status is the container's."""
    import time

    f = _stack(tmp_path, """
        services:
          sleeper:
            image: busybox
            init: true
            command: [sleep, "600"]
            stop_grace_period: 30s
          quitter:
            image: busybox
            init: true
            command: [sh, -c, "sleep 300 & exit 7"]
        """, name="init")
    assert lab.run("compose", "up", "-d", "-f", str(f), timeout=90).returncode == 0
    assert lab.inspect("init-sleeper-1")["HostConfig"]["Init"] is True
    assert lab.ok("exec", "init-sleeper-1", "cat", "/proc/1/comm").strip() != "sleep"  # PID 1 is the init, not the program
    from tests.labkit import wait_for

    assert wait_for(lambda: lab.inspect("init-quitter-1")["State"]["Status"] == "exited", 20)
    assert lab.inspect("init-quitter-1")["State"]["ExitCode"] == 7  # the program's status, its orphan notwithstanding
    started = time.monotonic()
    assert lab.run("compose", "-f", str(f), "down", timeout=60).returncode == 0
    assert time.monotonic() - started < 15
    assert lab.ok("ps", "-a", "--format", "{{.Names}}") == ""
