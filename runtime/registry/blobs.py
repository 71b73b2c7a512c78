"""Blobs over the distribution protocol. Downloads are verified while they stream: the bytes'
sha256 and size must be the descriptor's, and a gzip layer's unpacked tar is hashed on the way
(its diff id), so a wrong byte is refused and nothing reaches the store. Uploads: HEAD first (no
re-upload of what the repository has), a cross-repository mount where the registry has the blob
in another repository, then one PUT (monolithic) or PATCH chunks and a closing PUT."""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

from .errors import BAD_CONTENT, RegistryError
from .manifests import LAYER_ENCODING, Descriptor
from .transport import Session, scope

READ = 1 << 20
MAX_CONFIG = 32 << 20


class _Gunzip:
    """gzip members one after another (a layer may be several), fed in arbitrary pieces."""

    def __init__(self):
        self._d = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._d.eof:
                self._d = zlib.decompressobj(wbits=31)
            out.append(self._d.decompress(data))
            data = self._d.unused_data if self._d.eof else b""
        return b"".join(out)

    def finish(self, what: str) -> bytes:
        if not self._d.eof:
            raise RegistryError(f"{what} ends in the middle of its gzip stream", "the download was cut short or the blob is damaged",
                                "pull again", cause=BAD_CONTENT)
        return self._d.flush()


def _mismatch(what: str, desc: Descriptor, got_digest: str, got_size: int) -> RegistryError:
    return RegistryError(f"{what} does not match its digest: refused, nothing was stored",
                         f"the manifest says {desc.digest} ({desc.size} bytes); the registry sent {got_digest} ({got_size} bytes)",
                         "pull again; if it persists the registry's storage is damaged or something between rewrites "
                         "the traffic (a proxy)", cause=BAD_CONTENT, detail={"expected": desc.digest, "got": got_digest})


def fetch_small(session: Session, repo: str, desc: Descriptor, what: str) -> bytes:
    """A config (or other small blob) whole, verified."""
    if desc.size > MAX_CONFIG:
        raise RegistryError(f"{what} is {desc.size} bytes", f"more than {MAX_CONFIG >> 20} MiB for a JSON document", "",
                            cause=BAD_CONTENT)
    r = session.request("GET", f"/v2/{repo}/blobs/{desc.digest}", (scope(repo, "pull"),), stream=True, what=what)
    try:
        data = bytearray()
        for chunk in r.iter_raw():
            data += chunk
            if len(data) > desc.size:
                break
    finally:
        r.close()
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != desc.digest or len(data) != desc.size:
        raise _mismatch(what, desc, got, len(data))
    return bytes(data)


def fetch_layer(session: Session, repo: str, desc: Descriptor, dest: Path, partial: Path, what: str,
                progress=None, say=None) -> str:
    """Stream a layer into `dest` as a plain tar; returns the tar's digest (its diff id).

    The bytes as sent are kept in `partial` while they come, so a pull that was interrupted resumes
    where it stopped (a Range request; what was kept is hashed and unpacked again first). A digest
    or size mismatch removes `partial` and `dest`: nothing wrong is kept. Any other failure keeps
    `partial` for the next pull and removes `dest`."""
    plain = LAYER_ENCODING[desc.media_type] == ""
    have = partial.stat().st_size if partial.exists() else 0
    if have > desc.size:
        partial.unlink()
        have = 0
    gunzip = None if plain else _Gunzip()
    wire, tar, n = hashlib.sha256(), hashlib.sha256(), 0
    restart = False
    try:
        with open(partial, "ab") as keep, (open(dest, "wb") if not plain else _NoFile()) as out:
            def take(chunk: bytes) -> None:
                wire.update(chunk)
                data = gunzip.feed(chunk) if gunzip else chunk
                tar.update(data)
                out.write(data)

            if have:
                with open(partial, "rb") as f:
                    for chunk in iter(lambda: f.read(READ), b""):
                        take(chunk)
                n = have
                if say and have < desc.size:
                    say(f"{desc.digest[7:19]}: Resuming download at {have} of {desc.size} bytes")
            if n < desc.size:
                r = session.request("GET", f"/v2/{repo}/blobs/{desc.digest}", (scope(repo, "pull"),), stream=True, what=what,
                                    headers={"Range": f"bytes={n}-"} if n else {}, ok=(200, 206))
                try:
                    if n and r.status_code == 200:
                        restart = True  # the registry ignored the Range: start again from the first byte
                    else:
                        for chunk in r.iter_raw(READ):
                            n += len(chunk)
                            if n > desc.size:
                                raise _mismatch(what, desc, "more bytes than that", n)
                            keep.write(chunk)
                            take(chunk)
                            if progress:
                                progress(n)
                finally:
                    r.close()
            if not restart:
                got = "sha256:" + wire.hexdigest()
                if got != desc.digest or n != desc.size:
                    raise _mismatch(what, desc, got, n)
                if gunzip:
                    data = gunzip.finish(what)
                    tar.update(data)
                    out.write(data)
    except RegistryError as e:
        dest.unlink(missing_ok=True)
        if e.cause == BAD_CONTENT:
            partial.unlink(missing_ok=True)
        raise
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if restart:
        partial.unlink()
        return fetch_layer(session, repo, desc, dest, partial, what, progress, say)
    if plain:
        partial.replace(dest)  # the bytes as sent are the tar
    else:
        partial.unlink()
    return "sha256:" + tar.hexdigest()


class _NoFile:
    """Where a plain layer's tar goes while it streams: nowhere (`partial` is that tar)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data: bytes) -> None:
        pass


def exists(session: Session, repo: str, digest: str) -> bool:
    r = session.request("HEAD", f"/v2/{repo}/blobs/{digest}", (scope(repo, "pull,push"),), ok=(200, 404), what=f"blob {digest[7:19]}")
    return r.status_code == 200


def mount(session: Session, repo: str, digest: str, source: str) -> bool:
    """Ask the registry to link a blob it has in `source` into `repo` (no bytes sent)."""
    scopes = (scope(repo, "pull,push"), scope(source, "pull"))
    r = session.request("POST", f"/v2/{repo}/blobs/uploads/", scopes, params={"mount": digest, "from": source},
                        ok=(201, 202), what=f"a mount of {digest[7:19]} from {source}")
    if r.status_code == 202 and r.headers.get("location"):  # not mounted: the registry opened an upload instead; close it
        session.request("DELETE", r.headers["location"], scopes, ok=(204, 404, 405), what="an unused upload")
    return r.status_code == 201


class _FileChunks:
    """A file's bytes from `start` for `length`, re-iterable (a request may be sent twice);
    `progress(offset)` hears how far into the file the bytes handed over reach."""

    def __init__(self, path: Path, start: int, length: int, progress=None):
        self.path, self.start, self.length, self.progress = path, start, length, progress

    def __iter__(self):
        with open(self.path, "rb") as f:
            f.seek(self.start)
            left = self.length
            while left > 0:
                data = f.read(min(READ, left))
                if not data:
                    return
                left -= len(data)
                yield data
                if self.progress:
                    self.progress(self.start + self.length - left)


def _with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + "digest=" + digest


def upload(session: Session, repo: str, digest: str, path: Path, *, chunk_size: int = 0, progress=None) -> None:
    """Upload `path` as blob `digest`: one PUT, or PATCH chunks of `chunk_size` then a PUT.
    `progress(bytes sent)` follows it."""
    scopes = (scope(repo, "pull,push"),)
    what = f"an upload of {digest[7:19]} to {repo}"
    size = path.stat().st_size
    r = session.request("POST", f"/v2/{repo}/blobs/uploads/", scopes, ok=(202,), what=what)
    location = r.headers["location"]
    octets = {"Content-Type": "application/octet-stream"}
    if chunk_size and size > chunk_size:
        for start in range(0, size, chunk_size):
            n = min(chunk_size, size - start)
            r = session.request("PATCH", location, scopes, ok=(202,), what=what, content=_FileChunks(path, start, n, progress),
                                headers={**octets, "Content-Length": str(n), "Content-Range": f"{start}-{start + n - 1}"})
            location = r.headers["location"]
        r = session.request("PUT", _with_digest(location, digest), scopes, ok=(201,), what=what, headers={"Content-Length": "0"})
    else:
        r = session.request("PUT", _with_digest(location, digest), scopes, ok=(201,), what=what,
                            content=_FileChunks(path, 0, size, progress), headers={**octets, "Content-Length": str(size)})
    said = r.headers.get("docker-content-digest")
    if said and said != digest:
        raise RegistryError(f"The registry stored {what} as {said}", f"netdiag sent {digest}", "push again", cause=BAD_CONTENT)
