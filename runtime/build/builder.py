"""`netdiag build`: execute a parsed Dockerfile (runtime.build.dockerfile) into an image.

FROM starts from scratch or a local image, config instructions (ENV, WORKDIR, EXPOSE, CMD,
ENTRYPOINT, HEALTHCHECK, LABEL, USER) update the image config, and each COPY, ADD and RUN makes
one layer (copy_step, run_step). Nothing is tagged unless every step succeeds.

Build cache: NETDIAG_ROOT/build-cache/<key>.json = {"layer": digest or null, "blobs": [...],
"created": time}. The key hashes the state before the step (layer chain + config), the step's
parsed instruction, and for RUN the ARG values in effect, for COPY/ADD the sources' contents.
The store keeps every blob an entry lists. Timestamps come from the cache too, so an unchanged
rebuild gives the very same image id.
"""
from __future__ import annotations

import copy
import hashlib
import json
import posixpath
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import bounded, paths, state as state_store
from ..errors import BuildError, InvalidArgument, NotFound
from ..images import layers, store
from ..images.refs import normalize
from . import copy_step, run_step
from .dockerfile import Instruction, parse
from .image_view import ImageView

EPOCH = "1970-01-01T00:00:00Z"
CONFIG_INSTRUCTIONS = ("ENV", "WORKDIR", "EXPOSE", "CMD", "ENTRYPOINT", "HEALTHCHECK", "LABEL", "USER")


# ---------------------------------------------------------------- image config

def apply_config_instruction(cfg: dict, ins: Instruction, *, cmd_set: bool = False) -> None:
    """Apply a config instruction to the inner image config ({"Env", "Cmd", ...}) like Docker.

    `cmd_set` says whether CMD was set earlier in the same Dockerfile: ENTRYPOINT then keeps
    it, otherwise ENTRYPOINT resets the (inherited) CMD, as Docker does."""
    cmd, args = ins.cmd, ins.args
    if cmd == "ENV":
        env = list(cfg.get("Env") or [])
        for key, value in args:
            item = f"{key}={value}"
            at = next((i for i, e in enumerate(env) if e.split("=", 1)[0] == key), None)
            if at is None:
                env.append(item)
            else:
                env[at] = item
        cfg["Env"] = env
    elif cmd == "WORKDIR":
        joined = posixpath.normpath(posixpath.join("/", cfg.get("WorkingDir") or "/", args[0]))
        cfg["WorkingDir"] = "/" + joined.lstrip("/")
    elif cmd == "EXPOSE":
        cfg["ExposedPorts"] = {**(cfg.get("ExposedPorts") or {}), **{p: {} for p in args}}
    elif cmd in ("CMD", "ENTRYPOINT"):
        form, value = args
        argv = list(value) if form == "exec" else ["/bin/sh", "-c", value]
        if cmd == "CMD":
            cfg["Cmd"] = argv
        else:
            cfg["Entrypoint"] = argv
            if not cmd_set:
                cfg["Cmd"] = None
    elif cmd == "HEALTHCHECK":
        if args[0] == "NONE":
            cfg["Healthcheck"] = {"Test": ["NONE"]}
        else:
            f = ins.flags
            cfg["Healthcheck"] = {"Test": list(args[1]), "Interval": f["interval"], "Timeout": f["timeout"],
                                  "StartPeriod": f["start-period"], "Retries": f["retries"]}
    elif cmd == "LABEL":
        cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(args)}
    elif cmd == "USER":
        user, group = args
        cfg["User"] = f"{user}:{group}" if group else user
    else:
        raise BuildError(f"{cmd} does not change an image's config",
                         fix="Use one of " + ", ".join(CONFIG_INSTRUCTIONS))


# ---------------------------------------------------------------- cache keys

def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def state_id(layer_digests: list[str], cfg: dict) -> str:
    """Identifies the image built so far: its layer chain and its config."""
    return _sha({"layers": list(layer_digests), "config": cfg})


def cache_key(state: str, ins: Instruction, extra: dict) -> str:
    """Key of one file-changing step: `extra` holds the ARG values in effect (RUN, whose text is
    never expanded) or the sources' digest (COPY/ADD)."""
    return _sha([state, ins.cmd, ins.original, ins.args, ins.flags, extra])


def copy_cache_extra(context: Path, ins: Instruction, where: str) -> tuple[list[copy_step.Source], dict]:
    sources = copy_step.resolve_sources(context, ins.cmd, ins.args[0], where)
    return sources, {"sources": copy_step.sources_digest(context, sources)}


class _Cache:
    def __init__(self, enabled: bool):
        self.enabled, self.dir = enabled, paths.build_cache_dir()

    def get(self, key: str) -> dict | None:
        if not self.enabled:
            return None
        try:
            entry = state_store.read_json(self.dir / f"{key}.json")
        except ValueError:
            return None
        if not isinstance(entry, dict) or "created" not in entry:
            return None
        if entry.get("layer") and not store.blob_path(entry["layer"]).exists():
            return None
        return entry

    def put(self, key: str, layer: str | None, created: str, created_by: str) -> None:
        # Written with --no-cache too: the next build may use it (as Docker does).
        state_store.write_json(self.dir / f"{key}.json", {"layer": layer, "blobs": [layer] if layer else [],
                                                          "created": created, "created_by": created_by})


# ---------------------------------------------------------------- the build

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class _State:
    config: dict = field(default_factory=lambda: {"config": {}, "history": []})
    layers: list[str] = field(default_factory=list)
    base: tuple[str, str] = ("", "scratch")   # (image id, reference) recorded on RUN containers
    args: dict = field(default_factory=dict)  # ARG values in effect
    cmd_set: bool = False
    created: str = EPOCH

    @property
    def cfg(self) -> dict:
        return self.config["config"]

    def id(self) -> str:
        return state_id(self.layers, self.cfg)

    def record(self, ins: Instruction, layer: str | None, created: str | None = None) -> None:
        if layer:
            self.layers.append(layer)
        self.created = created or self.created
        self.config["history"].append({"created": self.created, "created_by": ins.original,
                                       "empty_layer": layer is None})


class Builder:
    def __init__(self, context: Path, filename: str, *, no_cache: bool, quiet: bool,
                 say: Callable[[str], None], tmp: Path):
        self.context, self.filename, self.quiet, self.say, self.tmp = context, filename, quiet, say, tmp
        self.cache = _Cache(not no_cache)
        self.st = _State()

    def where(self, ins: Instruction) -> str:
        return f"{self.filename} line {ins.line}"

    def step(self, ins: Instruction) -> None:
        if ins.cmd == "FROM":
            self._from(ins)
        elif ins.cmd == "ARG":  # those before FROM are dropped by FROM (the parser resolved them)
            for name, value in ins.args:
                if value is None:
                    self.st.args.pop(name, None)
                else:
                    self.st.args[name] = value
        elif ins.cmd in ("RUN", "COPY", "ADD"):
            self._layer_step(ins)
        else:
            apply_config_instruction(self.st.cfg, ins, cmd_set=self.st.cmd_set)
            self.st.cmd_set = self.st.cmd_set or ins.cmd == "CMD"
            self.st.record(ins, None)

    def progress_id(self, ins: Instruction) -> str:
        """What ' ---> ID' shows after a step: the base image's id after FROM, else the state's."""
        if ins.cmd == "FROM" and self.st.base[0]:
            return self.st.base[0].split(":", 1)[1][:12]
        return self.st.id()[:12]

    def _from(self, ins: Instruction) -> None:
        ref = ins.args[0]
        if ref == "scratch":
            self.st = _State()
            return
        try:
            img = store.get(ref)
        except (NotFound, InvalidArgument) as e:
            raise BuildError(f"{self.where(ins)}: base image {ref!r} not found", e.why, e.fix) from None
        base = img.config
        self.st = _State(config={"architecture": base.get("architecture"), "os": base.get("os"),
                                 "config": copy.deepcopy(img.run_config),
                                 "history": copy.deepcopy(base.get("history") or [])},
                         layers=list(img.layers), base=(img.id, ref), created=base.get("created") or EPOCH)
        for k in [k for k, v in self.st.config.items() if v is None]:
            del self.st.config[k]

    def _layer_step(self, ins: Instruction) -> None:
        where = self.where(ins)
        if ins.cmd == "RUN":
            sources, extra = None, {"args": dict(sorted(self.st.args.items()))}
        else:
            sources, extra = copy_cache_extra(self.context, ins, where)
        key = cache_key(self.st.id(), ins, extra)
        hit = self.cache.get(key)
        if hit is not None:
            self.say(" ---> Using cache")
            self.st.record(ins, hit.get("layer"), hit["created"])
            return
        out = self.tmp / "layer.tar"
        if ins.cmd == "RUN":
            made = self._run(ins, out, where)
        else:
            made = self._copy(ins, sources, out, where)
        created = _now()
        with store.writing():  # the new blob is referenced by the cache entry before prune may look
            layer = store.put_layer_file(out) if made else None
            self.cache.put(key, layer, created, ins.original)
        self.st.record(ins, layer, created)

    def _run(self, ins: Instruction, out: Path, where: str) -> bool:
        form, value = ins.args
        argv = list(value) if form == "exec" else ["/bin/sh", "-c", value]
        if not argv:
            raise BuildError(f"{where}: RUN has an empty command", fix="Give a command to run")
        return run_step.run(argv, self.st.cfg, self.st.args, self.st.layers, self.st.base, out,
                             where=where, quiet=self.quiet, say=self.say)

    def _copy(self, ins: Instruction, sources: list, out: Path, where: str) -> bool:
        view = ImageView([store.layer_dir(d) for d in self.st.layers])
        owner = copy_step.parse_chown(ins.flags["chown"], view, where) if "chown" in ins.flags else None
        stage = Path(tempfile.mkdtemp(dir=self.tmp, prefix="stage-"))
        try:
            stager = copy_step.Stager(stage, view, owner)
            workdir = self.st.cfg.get("WorkingDir", "")
            target, into = stager.dest_paths(ins.cmd, ins.args[1], workdir, len(sources), where)
            for src in sources:
                stager.add(ins.cmd, src, target, into, self.tmp, where)
            if not any(stage.iterdir()):
                return False
            layers.tar_directory(stage, out)
            return True
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _read_dockerfile(context: Path, dockerfile: str | None) -> tuple[str, str]:
    if dockerfile == "-":
        return bounded.decode(bounded.read_stream(sys.stdin.buffer, bounded.MAX_DOCKERFILE, "-"), "-"), "Dockerfile"
    path = Path(dockerfile) if dockerfile else context / "Dockerfile"
    try:
        return bounded.read_text(path, bounded.MAX_DOCKERFILE), (dockerfile or "Dockerfile")
    except bounded.Refused as e:  # bad input: exit 2
        raise InvalidArgument(f"Cannot read the Dockerfile {path}", e.problem if e.line is None else f"line {e.line}: {e.problem}",
                              "Create CONTEXT/Dockerfile, or name the file with -f") from None


def build(context: str | Path, *, dockerfile: str | None = None, tags: list[str] = (),
          build_args: dict | None = None, no_cache: bool = False, quiet: bool = False,
          say: Callable[[str], None] | None = None) -> store.Image:
    """Build and (if `tags`) tag an image. Prints Docker-like progress through `say` unless quiet."""
    say = say or (lambda line: print(line, flush=True))
    emit = (lambda line: None) if quiet else say
    ctx = Path(context)
    if not ctx.is_dir():
        raise BuildError(f"The build context {context} is not a directory",
                         fix="Give the directory holding the files to COPY, e.g. '.'")
    tags = [normalize(t) for t in tags]  # a bad tag fails before any work
    text, filename = _read_dockerfile(ctx, dockerfile)
    instructions = parse(text, filename, build_args)
    unused = sorted(set(build_args or {}) - {n for i in instructions if i.cmd == "ARG" for n, _ in i.args})
    if unused:
        print(f"[Warning] One or more build-args {unused} were not consumed", file=sys.stderr)
    paths.root().mkdir(parents=True, exist_ok=True)
    with store.adding("build the image"), state_store.scratch_dir("build") as tmp:  # prune removes it if the build is killed
        b = Builder(ctx, filename, no_cache=no_cache, quiet=quiet, say=emit, tmp=tmp)
        for n, ins in enumerate(instructions, 1):
            emit(f"Step {n}/{len(instructions)} : {ins.original}")
            b.step(ins)
            if n < len(instructions):
                emit(f" ---> {b.progress_id(ins)}")
        b.st.config["created"] = b.st.created
        img = store.commit(b.st.config, b.st.layers, tags[0] if tags else None)
        for t in tags[1:]:
            img = store.tag_manifest(img.manifest_digest, t)
    emit(f" ---> {img.short_id}")
    emit(f"Successfully built {img.short_id}")
    for t in tags:
        emit(f"Successfully tagged {t}")
    return img
