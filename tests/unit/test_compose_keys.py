"""The keys of real-world compose files (no root): env_file in Compose's .env format, tty and
stdin_open, init, ulimits, extra_hosts, expose, logging, stop_grace_period/stop_signal, profiles,
deploy.resources.limits, read_only, tmpfs, security_opt, sysctls as what `netdiag run` is asked,
and each key or value netdiag does not do refused at its line."""
import textwrap

import pytest

from runtime.compose import document, model
from runtime.errors import InvalidArgument


def _load(tmp_path, text, env=None, files=None):
    d = tmp_path / "app"
    d.mkdir(exist_ok=True)
    (d / "compose.yaml").write_text(textwrap.dedent(text))
    for name, body in (files or {}).items():
        (d / name).write_text(textwrap.dedent(body))
    return document.load(d / "compose.yaml", environ=env or {})


def _project(tmp_path, text, env=None, files=None, profiles=()):
    return model.project(_load(tmp_path, text, env, files), None, profiles)


def _refused(tmp_path, text, **kw) -> str:
    with pytest.raises(InvalidArgument) as e:
        _project(tmp_path, text, **kw)
    assert e.value.exit_code == 2
    return str(e.value)


ENV_FILE = """\
    # Compose's .env format
    export PLAIN=value with spaces   # a comment after an unquoted value
    SINGLE='literal $PLAIN \\n'
    DOUBLE="line1\\nsaid \\"hi\\" to ${PLAIN:-x}"
    FROM_ABOVE=${PLAIN}-2
    MULTI="first
    second"
    FROM_HOST
    NOT_SET_ANYWHERE
    EMPTY=
    PRICE=5$ or pa$$word
    """


def test_env_file_is_read_in_composes_format_and_environment_wins(tmp_path):
    p = _project(tmp_path, """
        services:
          web:
            image: busybox
            env_file: [base.env, {path: missing.env, required: false}, over.env]
            environment: {PLAIN: from-environment-key}
        """, env={"FROM_HOST": "host-value"}, files={"base.env": ENV_FILE, "over.env": "EMPTY=filled\n"})
    env = p.services["web"].environment
    assert env[:-1] == ["PLAIN=value with spaces", "SINGLE=literal $PLAIN \\n", 'DOUBLE=line1\nsaid "hi" to value with spaces',
                        "FROM_ABOVE=value with spaces-2", "MULTI=first\nsecond", "FROM_HOST=host-value", "EMPTY=filled",
                        "PRICE=5$ or pa$word"]
    assert env[-1] == "PLAIN=from-environment-key"  # environment: is applied after env_file, so it wins


def test_a_missing_required_env_file_and_a_bad_line_are_refused_at_their_lines(tmp_path):
    message = _refused(tmp_path, "services:\n  web:\n    image: busybox\n    env_file: nothere.env\n")
    assert ":4: services.web.env_file: env file" in message and "nothere.env not found" in message
    message = _refused(tmp_path, "services:\n  web:\n    image: busybox\n    env_file: bad.env\n", files={"bad.env": "OK=1\n1BAD=x\n"})
    assert "bad.env:2: not a KEY=VALUE line" in message
    message = _refused(tmp_path, "services:\n  web:\n    image: busybox\n    env_file: q.env\n", files={"q.env": 'A="never closed\n'})
    assert "q.env:1: A's value has no closing \"" in message


def test_run_options_of_the_common_keys(tmp_path):
    p = _project(tmp_path, """
        services:
          web:
            image: busybox
            tty: true
            stdin_open: "true"
            init: true
            extra_hosts: ["db.local:10.1.2.3", "v6.local=::1"]
            expose: ["8080", "9000-9001/udp"]
            logging: {driver: json-file, options: {max-size: 10m}}
            stop_grace_period: 1m30s
            stop_signal: SIGINT
            deploy: {resources: {limits: {memory: 64m, cpus: "0.5", pids: 50}}}
            healthcheck: {disable: true}
            read_only: true
            tmpfs: ["/run", "/tmp:size=8m,mode=1777"]
            security_opt: ["no-new-privileges:true"]
            sysctls: {net.ipv4.ip_unprivileged_port_start: 0, net.core.somaxconn: 1024}
            ulimits: {nproc: 500, nofile: {soft: 1024, hard: 2048}}
        """)
    web = p.services["web"]
    o = web.options
    assert (o["tty"], o["open_stdin"], o["read_only"], o["init"]) == (True, True, True, True)
    assert o["extra_hosts"] == ["db.local:10.1.2.3", "v6.local:::1"] and o["expose"] == ["8080", "9000-9001/udp"]
    assert (o["stop_signal"], o["stop_timeout"]) == ("SIGINT", 90)
    assert (o["memory"], o["cpus"], o["pids_limit"]) == ("64m", "0.5", 50)
    assert o["tmpfs"] == ["/run", "/tmp:size=8m,mode=1777"] and o["security_opt"] == ["no-new-privileges:true"]
    assert o["sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "0", "net.core.somaxconn": "1024"}
    assert o["ulimits"] == [{"Name": "nproc", "Soft": 500, "Hard": 500}, {"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert web.healthcheck == {"Test": ["NONE"]}


def test_the_old_limit_keys_still_work_and_may_not_disagree_with_deploy(tmp_path):
    o = _project(tmp_path, "services:\n  web: {image: busybox, mem_limit: 32m, pids_limit: 9}\n").services["web"].options
    assert (o["memory"], o["cpus"], o["pids_limit"]) == ("32m", None, 9)
    assert "mem_limit and deploy.resources.limits give different values" in _refused(
        tmp_path, "services:\n  web: {image: busybox, mem_limit: 32m, deploy: {resources: {limits: {memory: 64m}}}}\n")


def test_profiles_choose_services_like_docker_composes(tmp_path):
    text = """
        services:
          web: {image: busybox}
          debug: {image: busybox, profiles: [tools]}
          seed: {image: busybox, profiles: [tools, setup]}
        """
    assert list(_project(tmp_path, text).services) == ["web"]
    assert list(_project(tmp_path, text, profiles=["setup"]).services) == ["web", "seed"]
    assert list(_project(tmp_path, text, env={"COMPOSE_PROFILES": "tools"}).services) == ["web", "debug", "seed"]
    message = _refused(tmp_path, text.replace("{image: busybox}", "{image: busybox, depends_on: [debug]}", 1))
    assert "depends on service 'debug', which is only in profile tools" in message and "--profile tools" in message


@pytest.mark.parametrize("key, value, what", [
    ("logging", "{driver: syslog}", "log driver 'syslog': netdiag keeps each container's log itself"),
    ("extra_hosts", "[nocolon]", "an extra host is HOST:IP"),
    ("extra_hosts", "['db:not-an-ip']", "is not an IP address"),
    ("extra_hosts", "['db:host-gateway']", "host-gateway is not supported here"),
    ("expose", "['80/sctp']", "it is PORT[-PORT][/PROTO]"),
    ("stop_signal", "SIGNOPE", "Invalid signal 'SIGNOPE'"),
    ("stop_grace_period", "soon", "Invalid stop_grace_period"),
    ("deploy", "{replicas: 3}", "one container per service"),
    ("deploy", "{placement: {constraints: [x]}}", "a Swarm setting netdiag does not run"),
    ("deploy", "{resources: {reservations: {memory: 1g}}}", "deploy.resources.reservations is not supported"),
    ("tmpfs", "[relative]", "it needs an absolute path"),
    ("tmpfs", "['/run:noatime']", "option 'noatime' is not supported"),
    ("sysctls", "{kernel.shmmax: 1}", "only net.* keys are namespaced per container"),
    ("ulimits", "{nofile: {soft: 20, hard: 10}}", "the soft limit may not exceed the hard one"),
    ("ulimits", "{files: 10}", "Invalid ulimit 'files'"),
    ("storage_opt", "{size: 1G}", "netdiag's compose does not support storage_opt:"),
])
def test_what_is_not_built_is_refused_at_its_line(tmp_path, key, value, what):
    message = _refused(tmp_path, f"services:\n  web:\n    image: busybox\n    {key}: {value}\n")
    assert f"compose.yaml:4: services.web.{key}" in message and what in message, message


def test_sysctls_with_the_hosts_network_are_refused(tmp_path):
    message = _refused(tmp_path, "services:\n  web:\n    image: busybox\n    network_mode: host\n    sysctls: [net.core.somaxconn=9]\n")
    assert "would change the host's network" in message


def test_stop_signals_are_named_as_docker_takes_them(tmp_path):
    from runtime import validate

    assert [validate.signal_number(s) for s in ("SIGQUIT", "int", "9")] == [3, 2, 9]
    assert validate.signal_number("SIGRTMIN+3") == validate.signal_number("RTMIN") + 3  # systemd images' STOPSIGNAL
    o = _project(tmp_path, "services:\n  web: {image: busybox, stop_signal: SIGRTMIN+3}\n").services["web"].options
    assert o["stop_signal"] == "SIGRTMIN+3"


@pytest.mark.parametrize("key, value, what", [
    ("security_opt", "['no-new-privileges:maybe']", "no-new-privileges takes true or false"),
    ("cap_add", "[NET_MAGIC]", "NET_MAGIC"),
])
def test_confinement_is_checked_at_its_line_before_anything_exists(tmp_path, key, value, what):
    message = _refused(tmp_path, f"services:\n  web:\n    image: busybox\n    {key}: {value}\n")
    assert f"compose.yaml:4: services.web.{key}" in message and what in message, message
