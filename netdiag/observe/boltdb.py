"""A read-only reader of BoltDB files (go.etcd.io/bbolt's format), enough to read Podman's state
database (libpod's bolt_state.db) without running podman: the CLI costs ~15 ms of Go start-up and
database work per call and more per container, while the file is a few pages of JSON values.

The format (bbolt's page.go, node.go, bucket.go, db.go): pages of `page_size` bytes; pages 0 and 1
are the two meta pages (the one with the larger txid whose checksum holds is current); a bucket is
a B+tree of branch and leaf pages, its root in the meta page (the root bucket) or in its parent's
leaf value (16 bytes: root page id, sequence), where a root of 0 means an inline bucket whose one
leaf page follows those 16 bytes. Pages are little-endian.

Consistency: bbolt takes an exclusive flock on the file while a writer has it open (a shared one
for readers); this reader takes a shared one, so it never reads a half-written transaction.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time

BRANCH, LEAF, META = 0x01, 0x02, 0x04
BUCKET_LEAF_FLAG = 0x01
MAGIC = 0xED0CDAED
PAGE_HEADER = struct.Struct("<QHHI")        # id, flags, count, overflow
BRANCH_ELEM = struct.Struct("<IIQ")         # pos, ksize, pgid
LEAF_ELEM = struct.Struct("<IIII")          # flags, pos, ksize, vsize
META_BODY = struct.Struct("<IIIIQQQQQQ")    # magic, version, page size, flags, root (pgid, seq), freelist, pgid, txid, checksum
LOCK_WAIT = 2.0


class BoltError(ValueError):
    """Not a bolt file, or one this reader cannot read."""


class Bucket:
    """A bucket: nested buckets and key/value pairs, read lazily from the file's pages."""

    def __init__(self, db: "BoltDB", root: int, inline: bytes | None = None):
        self._db, self._root, self._inline = db, root, inline

    def items(self):
        """(key, value, is_bucket) for every entry, in key order."""
        if self._inline is not None:
            yield from self._leaf(self._inline, 0)
        else:
            yield from self._walk(self._root)

    def _walk(self, pgid: int):
        buf, off = self._db.page(pgid)
        _, flags, count, _ = PAGE_HEADER.unpack_from(buf, off)
        if flags & BRANCH:
            for i in range(count):
                elem = off + PAGE_HEADER.size + i * BRANCH_ELEM.size
                yield from self._walk(BRANCH_ELEM.unpack_from(buf, elem)[2])
        elif flags & LEAF:
            yield from self._leaf(buf, off)
        else:
            raise BoltError(f"page {pgid} is neither a branch nor a leaf (flags {flags:#x})")

    @staticmethod
    def _leaf(buf, off: int):
        count = PAGE_HEADER.unpack_from(buf, off)[2]
        for i in range(count):
            elem = off + PAGE_HEADER.size + i * LEAF_ELEM.size
            flags, pos, ksize, vsize = LEAF_ELEM.unpack_from(buf, elem)
            k = elem + pos
            yield bytes(buf[k:k + ksize]), bytes(buf[k + ksize:k + ksize + vsize]), bool(flags & BUCKET_LEAF_FLAG)

    def get(self, key: bytes) -> bytes | None:
        return next((v for k, v, sub in self.items() if k == key and not sub), None)

    def bucket(self, key: bytes) -> "Bucket | None":
        value = next((v for k, v, sub in self.items() if k == key and sub), None)
        return None if value is None else self._db.bucket_at(value)

    def buckets(self):
        """(name, Bucket) of the nested buckets."""
        for k, v, sub in self.items():
            if sub:
                yield k, self._db.bucket_at(v)


class BoltDB:
    """An open bolt file under a shared lock, its current meta page read: `with BoltDB(path) as db`."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._lock()
            size = os.fstat(self._fd).st_size
            if size < 4096:
                raise BoltError(f"{path}: too small for a bolt file ({size} bytes)")
            self._map = mmap.mmap(self._fd, size, prot=mmap.PROT_READ)
            self.page_size, root = self._meta()
            self.root = Bucket(self, root)
        except BaseException:
            os.close(self._fd)
            raise

    def _lock(self) -> None:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BoltError(f"{self.path}: a writer held its lock for {LOCK_WAIT:.0f} s") from None
                time.sleep(0.005)

    def _meta(self) -> tuple[int, int]:
        """(page size, root bucket's page) of the valid meta page with the larger txid."""
        best = None
        page_size = struct.unpack_from("<I", self._map, PAGE_HEADER.size + 8)[0]
        for n in (0, 1):
            off = n * page_size + PAGE_HEADER.size
            if off + META_BODY.size > len(self._map):
                continue
            fields = META_BODY.unpack_from(self._map, off)
            magic, _, psize, _, root, _, _, _, txid, checksum = fields
            body = bytes(self._map[off:off + META_BODY.size - 8])
            if magic != MAGIC or _fnv64a(body) != checksum:
                continue
            if best is None or txid > best[0]:
                best = (txid, psize, root)
        if best is None:
            raise BoltError(f"{self.path}: no valid meta page (not a bolt file?)")
        return best[1], best[2]

    def page(self, pgid: int):
        off = pgid * self.page_size
        if off + PAGE_HEADER.size > len(self._map):
            raise BoltError(f"{self.path}: page {pgid} is past the end of the file")
        return self._map, off

    def bucket_at(self, value: bytes) -> Bucket:
        root = struct.unpack_from("<Q", value, 0)[0]
        return Bucket(self, root) if root else Bucket(self, 0, inline=memoryview(value)[16:])

    def close(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)  # closing drops the flock
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
