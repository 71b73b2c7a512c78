"""Compose files as netdiag reads them (no root): the Compose schema's verdicts and netdiag's own
refusals at FILE:LINE, interpolation, Docker Compose's names, dependency order."""
import os
import textwrap

import pytest

from runtime.compose import document, model
from runtime.errors import InvalidArgument


def _project(tmp_path, text, *, dirname="My_App", env=None, name=None, dotenv=None):
    d = tmp_path / dirname
    d.mkdir(exist_ok=True)
    (d / "compose.yaml").write_text(textwrap.dedent(text))
    if dotenv is not None:
        (d / ".env").write_text(dotenv)
    return model.project(document.load(d / "compose.yaml", environ=env or {}), name)


def _refused(tmp_path, text, **kw) -> str:
    with pytest.raises(InvalidArgument) as e:
        _project(tmp_path, text, **kw)
    assert e.value.exit_code == 2
    return str(e.value)


THREE = """
    services:
      web:
        image: busybox
        ports: ["8080:80", {target: 443, published: 8443, host_ip: 127.0.0.1}]
        depends_on: {lb: {condition: service_healthy}}
      lb:
        build: ./lb
        depends_on: [app]
        networks: {default: {}, back: {aliases: [balancer]}}
        healthcheck: {test: "wget -q localhost", interval: 2s, timeout: 500ms, retries: 4}
      app:
        image: busybox
        command: httpd -f -p '8080'
        volumes: [./www:/www:ro, data:/data, {type: volume, source: data, target: /more, read_only: true}]
        networks: [back]
    networks:
      back: {internal: true}
    volumes:
      data: {}
    """


def test_names_order_and_translations_are_docker_composes(tmp_path):
    p = _project(tmp_path, THREE)
    assert p.name == "my_app" and p.order() == ["app", "lb", "web"]
    assert [p.container_name(s) for s in p.order()] == ["my_app-app-1", "my_app-lb-1", "my_app-web-1"]
    assert {k: (n.name, n.internal) for k, n in p.networks.items()} == {"back": ("my_app_back", True), "default": ("my_app_default", False)}
    web, lb, app = p.services["web"], p.services["lb"], p.services["app"]
    assert web.ports == ["8080:80", "127.0.0.1:8443:443/tcp"] and web.networks == {"default": []}
    assert lb.image == "my_app-lb" and lb.build["context"] == str((tmp_path / "My_App" / "lb").resolve())
    assert lb.networks == {"default": [], "back": ["balancer"]} and lb.depends_on == {"app": "service_started"}
    assert lb.healthcheck == {"Test": ["CMD-SHELL", "wget -q localhost"], "Retries": 4, "Interval": 2_000_000_000, "Timeout": 500_000_000}
    assert app.command == ["httpd", "-f", "-p", "8080"]
    assert app.volumes == [f"{(tmp_path / 'My_App' / 'www').resolve()}:/www:ro", "my_app_data:/data", "my_app_data:/more:ro"]
    assert _project(tmp_path, THREE, name="Other").name == "other"
    assert _project(tmp_path, "name: stack\n" + textwrap.dedent(THREE)).container_name("web") == "stack-web-1"


def test_a_changed_service_has_another_config_hash(tmp_path):
    before = _project(tmp_path, THREE).services["app"].config_hash
    assert _project(tmp_path, THREE).services["app"].config_hash == before
    assert _project(tmp_path, THREE.replace("'8080'", "'8081'")).services["app"].config_hash != before


def test_interpolation_from_the_environment_and_dotenv(tmp_path):
    text = """
        services:
          web:
            image: ${IMAGE:-busybox}
            command: echo $$HOME ${GREETING} ${EMPTY:-fallback} ${EMPTY-kept}
        """
    p = _project(tmp_path, text, env={"GREETING": "hi", "EMPTY": ""}, dotenv="# comment\nexport GREETING='from dotenv'\nIMAGE=alpine\n")
    assert p.services["web"].image == "alpine"  # from .env
    assert p.services["web"].command == ["echo", "$HOME", "hi", "fallback"]  # the environment wins over .env
    message = _refused(tmp_path, text.replace("${GREETING}", "${GREETING:?say hello}"), env={}, dirname="no_dotenv")
    assert message.startswith(f"{tmp_path / 'no_dotenv' / 'compose.yaml'}:5: services.web.command: variable GREETING is required: say hello")


@pytest.mark.parametrize("text, where, what", [
    ("services:\n  web:\n    imag: busybox\n", ":3: services.web.imag: unknown key 'imag'", "Did you mean 'image'"),
    ("services:\n  web:\n    image: busybox\n    depends_on: {db: {condition: when_ready}}\n",
     ":4: services.web.depends_on.db.condition: 'when_ready' is not one of", ""),
    ("services:\n  web:\n    image: busybox\n    depends_on: [db]\n", ":4: services.web.depends_on: depends on undefined service 'db'", ""),
    ("services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n", ": services.a.depends_on: a dependency cycle between a, b", ""),
    ("services:\n  web:\n    image: busybox\n    volumes: [cache:/c]\n", ":4: services.web.volumes[0]: undefined volume 'cache'", ""),
    ("services:\n  web:\n    image: busybox\n    networks: [back]\n", ":4: services.web.networks.back: undefined network 'back'", ""),
    ("services:\n  web:\n    image: busybox\n    ports: ['99999:80']\n", ":4: services.web.ports[0]: Invalid host port", ""),
    ("services:\n  web:\n    image: busybox\n    secrets: [x]\n", ":4: services.web.secrets: netdiag's compose does not support secrets:", ""),
    ("services:\n  web:\n    image: busybox\n    healthcheck: {test: [RUN, x]}\n", ":4: services.web.healthcheck.test: a test starts with CMD", ""),
    ("services:\n  web: {build: .}\n  web2: {}\n", ":3: services.web2: neither image nor build", ""),
    ("services: {}\n", ":1: services: no services", ""),
])
def test_refusals_name_the_file_line_and_field(tmp_path, text, where, what):
    message = _refused(tmp_path, text)
    path = str(tmp_path / "My_App" / "compose.yaml")
    assert message.startswith(path), message
    line = message[len(path):]
    assert line.startswith(where) or (where.startswith(": ") and where[2:] in line), message
    assert what in message


def test_a_fifo_is_refused_before_it_is_read(tmp_path):
    fifo = tmp_path / "compose.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgument, match="is a FIFO, not a regular file"):
        document.load(fifo, environ={})


def test_project_names_are_normalised_like_docker_composes():
    assert model.project_name("My App.v2") == "myappv2"
    with pytest.raises(InvalidArgument):
        model.project_name("__")


def test_network_mode_host_or_none_replaces_the_networks(tmp_path):
    p = _project(tmp_path, "services:\n  probe: {image: busybox, network_mode: host}\n")
    assert p.services["probe"].networks == {} and p.services["probe"].options["network_mode"] == "host"
    assert "default" not in p.networks  # nothing joins it, so it is not made
    assert "network_mode 'service:db' is not supported here" in _refused(
        tmp_path, "services:\n  probe: {image: busybox, network_mode: 'service:db'}\n")
    assert "exclude each other" in _refused(tmp_path, "services:\n  probe: {image: busybox, network_mode: none, networks: [x]}\nnetworks: {x: {}}\n")


def test_an_entrypoint_of_several_words_runs_them_before_the_command(tmp_path):
    p = _project(tmp_path, "services:\n  a: {image: busybox, entrypoint: [/bin/sh, -c], command: [echo hi]}\n"
                           "  b: {image: busybox, entrypoint: 'sh -c', command: null}\n  c: {image: busybox, entrypoint: ''}\n")
    assert (p.services["a"].entrypoint, p.services["a"].command) == ("/bin/sh", ["-c", "echo hi"])
    assert (p.services["b"].entrypoint, p.services["b"].command) == ("sh", ["-c"])
    assert (p.services["c"].entrypoint, p.services["c"].command) == ("", None)
