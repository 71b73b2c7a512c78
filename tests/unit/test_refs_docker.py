"""Docker's reference rules, with the cases of github.com/distribution/reference's normalize_test.go
(TestValidateReferenceName, TestValidateRemoteName, TestParseRepositoryInfo)."""
import pytest

from runtime.errors import InvalidArgument
from runtime.images import refs

VALID_NAMES = [
    "docker/docker", "library/debian", "debian", "localhost/library/debian", "localhost/debian",
    "LOCALDOMAIN/library/debian", "LOCALDOMAIN/debian", "docker.io/docker/docker", "docker.io/library/debian",
    "docker.io/debian", "index.docker.io/docker/docker", "index.docker.io/library/debian", "index.docker.io/debian",
    "127.0.0.1:5000/docker/docker", "127.0.0.1:5000/library/debian", "127.0.0.1:5000/debian", "192.168.0.1",
    "192.168.0.1:80", "192.168.0.1:8/debian", "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker", "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "Docker/docker", "DOCKER/docker",
    # remote names
    "docker-rules/docker", "docker---rules/docker", "doc/docker", "d/docker", "jess/t", "dock__er/docker",
]
INVALID_NAMES = [
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker", "-docker.io/docker/docker",
    "docker///docker", "docker.io/docker/Docker", "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000",
    "fc00::1:5000/debian", "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    # remote names
    "docker-/docker", "-docker-/docker", "____/____", "_docker/_docker", "dock..er/docker", "dock_.er/docker",
    "dock-.er/docker", "docker/", "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255" * 4 + "/docker",
    # and what the old local-only rules refused
    "Upper", "a:", "a:-x", "a//b", "",
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(name):
    refs.parse(name)


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names(name):
    with pytest.raises(InvalidArgument):
        refs.parse(name)


# (remote name, familiar, full, ambiguous spellings, domain)
REPOSITORY_INFO = [
    ("fooo", "localhost/fooo", "localhost/fooo", [], "localhost"),
    ("fooo/bar", "localhost/fooo/bar", "localhost/fooo/bar", [], "localhost"),
    ("fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo", [], "LOCALDOMAIN"),
    ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", ["index.docker.io/fooo/bar"], "docker.io"),
    ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", ["library/ubuntu"], "docker.io"),
    ("nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", [], "docker.io"),
    ("other/library", "other/library", "docker.io/other/library", [], "docker.io"),
    ("private/moonbase", "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase", [], "127.0.0.1:8000"),
    ("privatebase", "example.com/privatebase", "example.com/privatebase", [], "example.com"),
    ("privatebasee", "example.com:8000/privatebasee", "example.com:8000/privatebasee", [], "example.com:8000"),
    ("library/ubuntu-12.04-base", "ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base",
     ["index.docker.io/library/ubuntu-12.04-base"], "docker.io"),
    ("library/foo", "foo", "docker.io/library/foo", ["docker.io/foo"], "docker.io"),
    ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", [], "docker.io"),
    ("store/foo/bar", "store/foo/bar", "docker.io/store/foo/bar", [], "docker.io"),
    ("bar", "Foo/bar", "Foo/bar", [], "Foo"),
]


@pytest.mark.parametrize("remote,familiar,full,ambiguous,domain", REPOSITORY_INFO)
def test_repository_info(remote, familiar, full, ambiguous, domain):
    for spelling in [familiar, full, *ambiguous]:
        r = refs.parse(spelling, default_tag=False)
        assert (r.path, r.familiar_name, r.name, r.domain) == (remote, familiar, full, domain), spelling


DIGEST = "sha256:" + "ab" * 32


def test_tags_and_digests():
    assert str(refs.parse("busybox")) == "docker.io/library/busybox:latest"
    assert refs.parse("busybox").familiar() == "busybox:latest"
    r = refs.parse(f"127.0.0.1:5000/web@{DIGEST}")
    assert (r.domain, r.path, r.tag, r.digest) == ("127.0.0.1:5000", "web", "", DIGEST)
    r = refs.parse(f"web:1.0@{DIGEST}")
    assert (r.tag, r.digest, r.familiar()) == ("1.0", DIGEST, f"web:1.0@{DIGEST}")
    assert refs.parse("localhost:5000/a/b:v_1.2-rc").tag == "v_1.2-rc"
    assert refs.parse("[fc00::1]:5000/x:2").domain == "[fc00::1]:5000"


@pytest.mark.parametrize("bad", [
    "web@sha256:" + "ab" * 31,          # too short for sha256
    "web@sha256:" + "AB" * 32,          # digests are lower-case
    "web@md5:" + "ab" * 16,             # not a registered algorithm
    "web:" + "x" * 129,                 # a tag is at most 128 characters
    "web:.hidden",                      # nor starts with '.'
])
def test_bad_tags_and_digests(bad):
    with pytest.raises(InvalidArgument):
        refs.parse(bad)


def test_store_names_are_familiar_and_tagged():
    assert refs.normalize("docker.io/library/busybox") == "busybox:latest"
    assert refs.normalize("index.docker.io/lab/web:2") == "lab/web:2"
    assert refs.normalize("127.0.0.1:5000/web") == "127.0.0.1:5000/web:latest"
    with pytest.raises(InvalidArgument):
        refs.normalize(f"web@{DIGEST}")
