import pytest

from runtime.errors import BuildError, InvalidArgument
from runtime.build.dockerfile import Instruction, expand, parse

S = 10**9  # nanoseconds per second


def last(text, **kw):
    return parse(text, **kw)[-1]


# (id, Dockerfile text, build_args, expected (cmd, args, flags) of the LAST instruction)
CASES = [
    # FROM
    ("from", "FROM alpine:3.20", None, ("FROM", ("alpine:3.20", None), {})),
    ("from-as", "from alpine AS Base", None, ("FROM", ("alpine", "base"), {})),
    ("from-arg-before", "ARG TAG=3.19\nFROM alpine:$TAG", None, ("FROM", ("alpine:3.19", None), {})),
    ("from-build-arg", "ARG TAG=3.19\nFROM alpine:${TAG}", {"TAG": "edge"}, ("FROM", ("alpine:edge", None), {})),
    # comments, blank lines, continuations
    ("comment-blank", "# hi\n\n   # indented comment\nFROM a\n\nRUN x", None, ("RUN", ("shell", "x"), {})),
    ("continuation", "FROM a\nRUN apt-get update && \\\n    apt-get install -y curl", None,
     ("RUN", ("shell", "apt-get update &&     apt-get install -y curl"), {})),
    ("continuation-comment-inside", "FROM a\nRUN a \\\n# skipped\n\n  && b", None, ("RUN", ("shell", "a   && b"), {})),
    ("continuation-trailing-space", "FROM a\nRUN a \\  \n b", None, ("RUN", ("shell", "a  b"), {})),
    # parser directives
    ("directive-syntax", "# syntax=docker/dockerfile:1\nFROM a", None, ("FROM", ("a", None), {})),
    ("directive-escape-backtick", "# escape=`\nFROM a\nCOPY C:\\src\\app `\n  C:\\app\\", None,
     ("COPY", (("C:\\src\\app",), "C:\\app\\"), {})),
    ("directive-after-comment-is-comment", "# hello\n# escape=`\nFROM a\nRUN a \\\n b", None,
     ("RUN", ("shell", "a  b"), {})),
    # RUN / CMD / ENTRYPOINT forms
    ("run-exec", 'FROM a\nRUN ["sh", "-c", "echo $HOME"]', None, ("RUN", ("exec", ["sh", "-c", "echo $HOME"]), {})),
    ("run-shell-not-expanded", "FROM a\nARG X=1\nRUN echo $X", None, ("RUN", ("shell", "echo $X"), {})),
    ("run-invalid-json-is-shell", "FROM a\nRUN [ -f /x ] && echo y", None, ("RUN", ("shell", "[ -f /x ] && echo y"), {})),
    ("cmd-single-quotes-is-shell", "FROM a\nCMD ['a', 'b']", None, ("CMD", ("shell", "['a', 'b']"), {})),
    ("cmd-exec-empty", "FROM a\nCMD []", None, ("CMD", ("exec", []), {})),
    ("entrypoint-exec", 'FROM a\nENTRYPOINT ["/bin/app", "--flag"]', None,
     ("ENTRYPOINT", ("exec", ["/bin/app", "--flag"]), {})),
    ("entrypoint-shell", "FROM a\nentrypoint exec /bin/app", None, ("ENTRYPOINT", ("shell", "exec /bin/app"), {})),
    # ENV / LABEL
    ("env-pairs", 'FROM a\nENV K=V K2="v 2" K3=a\\ b', None, ("ENV", (("K", "V"), ("K2", "v 2"), ("K3", "a b")), {})),
    ("env-legacy", "FROM a\nENV K V with  spaces", None, ("ENV", (("K", "V with  spaces"),), {})),
    ("env-same-line-uses-old-value", "FROM a\nENV A=1\nENV A=2 B=$A", None, ("ENV", (("A", "2"), ("B", "1")), {})),
    ("env-single-quotes-literal", "FROM a\nENV A=1\nENV B='$A' C=\"$A\"", None, ("ENV", (("B", "$A"), ("C", "1")), {})),
    ("label-quotes", 'FROM a\nLABEL "com.example.vendor"="ACME Inc" version=1.0 desc="a \\"b\\""', None,
     ("LABEL", (("com.example.vendor", "ACME Inc"), ("version", "1.0"), ("desc", 'a "b"')), {})),
    # ARG and substitution
    ("arg-default", "FROM a\nARG V=1", None, ("ARG", (("V", "1"),), {})),
    ("arg-unset", "FROM a\nARG V", None, ("ARG", (("V", None),), {})),
    ("arg-build-arg-wins", "FROM a\nARG V=1", {"V": "9"}, ("ARG", (("V", "9"),), {})),
    ("arg-inherits-global", "ARG V=g\nFROM a\nARG V\nWORKDIR /$V", None, ("WORKDIR", ("/g",), {})),
    ("arg-global-not-in-stage", "ARG V=g\nFROM a\nWORKDIR /x$V", None, ("WORKDIR", ("/x",), {})),
    ("env-beats-arg", "FROM a\nENV V=env\nARG V=arg\nWORKDIR /$V", None, ("WORKDIR", ("/env",), {})),
    ("subst-default", "FROM a\nWORKDIR ${NOPE:-/srv}", None, ("WORKDIR", ("/srv",), {})),
    ("subst-alt", "FROM a\nARG D=1\nLABEL x=${D:+debug} y=${NOPE:+z}", None, ("LABEL", (("x", "debug"), ("y", "")), {})),
    ("subst-user", "FROM a\nARG U=app\nUSER $U:${U}grp", None, ("USER", ("app", "appgrp"), {})),
    ("subst-escaped-dollar", "FROM a\nENV P=\\$HOME", None, ("ENV", (("P", "$HOME"),), {})),
    # COPY / ADD
    ("copy", "FROM a\nCOPY src /app", None, ("COPY", (("src",), "/app"), {})),
    ("copy-many-chown", "FROM a\nARG G=grp\nCOPY --chown=app:$G a b /app/", None,
     ("COPY", (("a", "b"), "/app/"), {"chown": "app:grp"})),
    ("copy-json", 'FROM a\nCOPY ["my file", "/dst dir/"]', None, ("COPY", (("my file",), "/dst dir/"), {})),
    ("add", "FROM a\nADD https://example.com/x.tgz /opt/", None, ("ADD", (("https://example.com/x.tgz",), "/opt/"), {})),
    # WORKDIR / USER
    ("workdir", "FROM a\nWORKDIR /srv/app", None, ("WORKDIR", ("/srv/app",), {})),
    ("user", "FROM a\nUSER nobody", None, ("USER", ("nobody", None), {})),
    ("user-group", "FROM a\nUSER 1000:1000", None, ("USER", ("1000", "1000"), {})),
    # EXPOSE
    ("expose", "FROM a\nEXPOSE 80 80/tcp 53/UDP 8000-8002", None,
     ("EXPOSE", ("80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"), {})),
    ("expose-arg", "FROM a\nARG P=8080\nEXPOSE $P/udp", None, ("EXPOSE", ("8080/udp",), {})),
    # HEALTHCHECK
    ("health-none", "FROM a\nHEALTHCHECK NONE", None, ("HEALTHCHECK", ("NONE",), {})),
    ("health-shell-defaults", "FROM a\nHEALTHCHECK CMD curl -f http://localhost/ || exit 1", None,
     ("HEALTHCHECK", ("CMD", ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]),
      {"interval": 30 * S, "timeout": 30 * S, "start-period": 0, "retries": 3})),
    ("health-exec-flags", 'FROM a\nHEALTHCHECK --interval=1m30s --timeout=500ms --start-period=1.5s --retries=5 '
                          'CMD ["pg_isready", "-q"]', None,
     ("HEALTHCHECK", ("CMD", ["CMD", "pg_isready", "-q"]),
      {"interval": 90 * S, "timeout": S // 2, "start-period": 3 * S // 2, "retries": 5})),
    ("health-zero-means-default", "FROM a\nHEALTHCHECK --interval=0 --retries=0 CMD true", None,
     ("HEALTHCHECK", ("CMD", ["CMD-SHELL", "true"]),
      {"interval": 30 * S, "timeout": 30 * S, "start-period": 0, "retries": 3})),
]


@pytest.mark.parametrize("text,build_args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse(text, build_args, expected):
    got = last(text, build_args=build_args)
    assert (got.cmd, got.args, got.flags) == expected


# (id, Dockerfile text, line the error must name, fragment of the message)
ERRORS = [
    ("unknown", "FROM a\n\nRUNN echo", 3, 'unknown instruction "RUNN". Did you mean RUN?'),
    ("unknown-no-close-match", "FROM a\nRUN x\napt-get install", 3, "Supported instructions: ADD, ARG"),
    ("docker-only-instruction", "FROM a\nVOLUME /data", 2, 'instruction "VOLUME" is not supported'),
    ("missing-args", "FROM a\nRUN", 2, "RUN needs arguments"),
    ("missing-args-after-flags", "FROM a\nCOPY --chown=a", 2, "COPY needs arguments"),
    ("unterminated-double", 'FROM a\nENV A="x', 2, "unterminated double quote"),
    ("unterminated-single", "FROM a\nLABEL a='x", 2, "unterminated single quote"),
    ("unterminated-brace", "FROM a\nWORKDIR ${A:-x", 2, "missing '}'"),
    ("bad-substitution", "FROM a\nWORKDIR ${A?x}", 2, "unsupported substitution"),
    ("empty-file", "", 1, "the file has no instructions"),
    ("only-comments", "# syntax=x\n# nothing\n", 2, "the file has no instructions"),
    ("no-from", "ARG A=1\nARG B=2", 2, "there is no FROM instruction"),
    ("before-from", "ARG A=1\nRUN x\nFROM a", 2, "RUN comes before FROM"),
    ("multi-stage", "FROM a AS build\nRUN make\nFROM b", 3, "multi-stage builds are not supported"),
    ("copy-from", "FROM a\nCOPY --from=build /x /y", 2, "COPY --from is not supported"),
    ("copy-one-arg", "FROM a\nCOPY onlyone", 2, "at least one source and a destination"),
    ("copy-many-no-slash", "FROM a\nCOPY a b /dst", 2, "destination directory ending in /"),
    ("copy-unknown-flag", "FROM a\nCOPY --chmod=755 a /b", 2, "unknown flag --chmod for COPY"),
    ("run-unknown-flag", "FROM a\nRUN --mount=type=cache x", 2, "RUN takes no flags"),
    ("flag-no-value", "FROM a\nADD --chown a /b", 2, "flag --chown needs a value"),
    ("flag-twice", "FROM a\nADD --chown=a --chown=b a /b", 2, "flag --chown is given twice"),
    ("json-not-strings", "FROM a\nCMD [1, 2]", 2, "array of strings"),
    ("env-no-value", "FROM a\nENV K", 2, "ENV K has no value"),
    ("env-word-without-eq", "FROM a\nENV A=1 B", 2, 'expects KEY=VALUE, got "B"'),
    ("env-empty-name", "FROM a\nENV =x", 2, "ENV names cannot be empty"),
    ("arg-bad-name", "FROM a\nARG 1X=2", 2, 'invalid ARG name "1X"'),
    ("from-bad-form", "FROM a b", 1, "FROM takes an image and an optional AS NAME"),
    ("from-empty-image", "ARG IMG\nFROM $IMG", 2, "FROM image name is empty"),
    ("from-bad-alias", "FROM a AS 1st", 1, 'invalid stage name "1st"'),
    ("user-two-args", "FROM a\nUSER a b", 2, "USER takes exactly one argument"),
    ("user-empty-group", "FROM a\nUSER a:", 2, 'invalid USER "a:"'),
    ("workdir-empty", "FROM a\nWORKDIR $NOPE", 2, "WORKDIR path is empty"),
    ("expose-bad", "FROM a\nEXPOSE 80 http", 2, 'invalid port "http"'),
    ("expose-zero", "FROM a\nEXPOSE 0", 2, 'invalid port "0"'),
    ("expose-too-big", "FROM a\nEXPOSE 70000/tcp", 2, 'invalid port "70000/tcp"'),
    ("expose-bad-proto", "FROM a\nEXPOSE 80/icmp", 2, 'invalid port "80/icmp"'),
    ("health-bad-type", "FROM a\nHEALTHCHECK RUN true", 2, 'unknown HEALTHCHECK type "RUN"'),
    ("health-none-args", "FROM a\nHEALTHCHECK NONE now", 2, "HEALTHCHECK NONE takes no options or arguments"),
    ("health-none-flags", "FROM a\nHEALTHCHECK --retries=2 NONE", 2, "HEALTHCHECK NONE takes no options"),
    ("health-no-command", "FROM a\nHEALTHCHECK CMD", 2, "HEALTHCHECK CMD needs a command"),
    ("health-empty-exec", "FROM a\nHEALTHCHECK CMD []", 2, "HEALTHCHECK CMD needs a command"),
    ("health-no-unit", "FROM a\nHEALTHCHECK --interval=30 CMD true", 2, 'invalid duration "30" for --interval'),
    ("health-too-short", "FROM a\nHEALTHCHECK --timeout=10us CMD true", 2, "--timeout cannot be less than 1ms"),
    ("health-negative", "FROM a\nHEALTHCHECK --start-period=-5s CMD true", 2, "--start-period cannot be less than 1ms"),
    ("health-bad-retries", "FROM a\nHEALTHCHECK --retries=x CMD true", 2, 'invalid --retries "x"'),
    ("health-negative-retries", "FROM a\nHEALTHCHECK --retries=-1 CMD true", 2, "--retries cannot be negative"),
    ("health-unknown-flag", "FROM a\nHEALTHCHECK --start-interval=1s CMD true", 2, "unknown flag --start-interval"),
    ("directive-bad-escape", "# escape=x\nFROM a", 1, "invalid escape character 'x'"),
    ("directive-twice", "# escape=`\n# escape=\\\nFROM a", 2, "escape parser directive is given twice"),
    ("error-after-continuation", "FROM a\nRUN a \\\n  b\nRUNN c", 4, "unknown instruction"),
]


@pytest.mark.parametrize("text,line,fragment", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_errors(text, line, fragment):
    with pytest.raises(BuildError) as err:
        parse(text)
    message = str(err.value)
    assert message.startswith(f"Dockerfile line {line}: "), message
    assert fragment in message


def test_error_names_the_file():
    with pytest.raises(BuildError, match=r"^build/Containerfile line 1: unknown instruction"):
        parse("FORM alpine", "build/Containerfile")


def test_instruction_fields_line_and_original():
    got = parse("# c\nFROM alpine\n\nRUN a && \\\n    b\nCMD [\"x\"]\n")
    assert got == [
        Instruction(2, "FROM", ("alpine", None), {}, "FROM alpine"),
        Instruction(4, "RUN", ("shell", "a &&     b"), {}, "RUN a &&     b"),
        Instruction(6, "CMD", ("exec", ["x"]), {}, 'CMD ["x"]'),
    ]


def test_crlf_and_bom():
    got = parse("\ufeffFROM a\r\nRUN x \\\r\n  y\r\n")
    assert [(i.line, i.original) for i in got] == [(1, "FROM a"), (2, "RUN x   y")]


EXPAND = [
    ("plain", "$A/${A}", {"A": "x"}, "x/x"),
    ("unset", "[$NOPE]", {}, "[]"),
    ("default", "${A:-d} ${E:-d} ${E-d} ${N-d}", {"A": "x", "E": ""}, "x d  d"),
    ("alt", "${A:+y} ${E:+y} ${E+y} ${N+y}", {"A": "x", "E": ""}, "y  y "),
    ("nested", "${N:-${A}-z}", {"A": "x"}, "x-z"),
    ("quotes", "'$A' \"$A\" \\$A", {"A": "x"}, "$A x $A"),
    ("lone-dollar", "cost $5 $", {}, "cost  $"),
]


@pytest.mark.parametrize("word,env,expected", [c[1:] for c in EXPAND], ids=[c[0] for c in EXPAND])
def test_expand(word, env, expected):
    assert expand(word, env) == expected


def test_expand_backtick_escape_and_errors():
    assert expand("C:\\x `$A", {"A": "1"}, escape="`") == "C:\\x $A"
    with pytest.raises(InvalidArgument, match="(?i)unterminated double quote"):
        expand('"open', {})
