"""The cluster store: etcd's v3 API through etcd3gw (the JSON gateway; no gRPC stack).

`etcd://HOST:PORT[,HOST:PORT...]`: requests go to the endpoint that answered last and fail over to
the others; every request has a short timeout, so a store that is down costs a few seconds and
one clear error (ClusterUnreachable), never a hang. Values are JSON. Transactions are etcd's
(compare, then success or failure ops, atomically); helpers below build the compares netdiag uses.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import threading
from typing import Callable, Iterable

from ..errors import InvalidArgument, NetdiagError

TIMEOUT = float(os.environ.get("NETDIAG_CLUSTER_TIMEOUT", "2"))  # seconds per request and endpoint
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


class ClusterUnreachable(NetdiagError):
    """The cluster store did not answer (exit 1): nothing was changed."""


def parse_url(url: str) -> list[tuple[str, int]]:
    """'etcd://10.0.0.1:2379,10.0.0.2:2379' -> [(host, port), ...]; InvalidArgument otherwise."""
    fix = "use e.g. --store etcd://10.99.0.254:2379 (several endpoints separated by commas)"
    if not isinstance(url, str) or not url.startswith("etcd://"):
        raise InvalidArgument(f"Invalid cluster store {url!r}", "the store is an etcd URL: etcd://HOST:PORT[,HOST:PORT]", fix)
    out = []
    for part in url[len("etcd://"):].rstrip("/").split(","):
        host, sep, port = part.rpartition(":")
        if not sep:
            host, port = part, "2379"
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOST.fullmatch(host):
                raise InvalidArgument(f"Invalid etcd endpoint {part!r} in {url}", "expected HOST:PORT", fix) from None
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise InvalidArgument(f"Invalid etcd port in {part!r}", "ports are 1-65535", fix)
        out.append((host, int(port)))
    if not out:
        raise InvalidArgument(f"Invalid cluster store {url!r}", "it names no endpoint", fix)
    return out


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _range_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


# -- compares and operations (etcd's Txn, as the JSON gateway spells them) -----------------------
def absent(key: str) -> dict:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}


def present(key: str) -> dict:
    return {"key": b64(key), "target": "VERSION", "result": "GREATER", "version": 0}


def value_is(key: str, value) -> dict:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(json.dumps(value, sort_keys=True))}


def empty(prefix: str) -> dict:
    """No key under `prefix` (an empty range compares as one key with create_revision 0)."""
    return {"key": b64(prefix), "range_end": _range_end(prefix), "target": "CREATE", "result": "EQUAL", "create_revision": 0}


def unchanged(prefix: str, revision: int) -> dict:
    """Nothing under `prefix` was written after `revision` (the revision it was read at)."""
    return {"key": b64(prefix), "range_end": _range_end(prefix), "target": "MOD", "result": "LESS", "mod_revision": revision + 1}


def put(key: str, value, lease: int | None = None) -> dict:
    op = {"key": b64(key), "value": b64(json.dumps(value, sort_keys=True))}
    if lease:
        op["lease"] = lease
    return {"request_put": op}


def delete(key: str, prefix: bool = False) -> dict:
    op = {"key": b64(key)}
    if prefix:
        op["range_end"] = _range_end(key)
    return {"request_delete_range": op}


class Store:
    def __init__(self, url: str, timeout: float = TIMEOUT):
        self.url, self.endpoints, self.timeout = url, parse_url(url), timeout
        self._clients: dict[tuple[str, int], object] = {}
        self._good = 0

    def _client(self, endpoint: tuple[str, int]):
        import etcd3gw  # ~0.1 s of imports (requests): only commands that talk to the store pay it

        if endpoint not in self._clients:
            self._clients[endpoint] = etcd3gw.client(host=endpoint[0], port=endpoint[1], timeout=self.timeout, api_path="/v3/")
        return self._clients[endpoint]

    def call(self, fn: Callable, what: str = "reach the cluster store"):
        """fn(client) on the endpoint that answered last, failing over to the others."""
        from etcd3gw import exceptions

        errors = []
        order = self.endpoints[self._good:] + self.endpoints[:self._good]
        for endpoint in order:
            try:
                out = fn(self._client(endpoint))
            except (exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError) as e:
                errors.append(f"{endpoint[0]}:{endpoint[1]}: {_short(e)}")
                continue
            except exceptions.Etcd3Exception as e:
                raise NetdiagError(f"The cluster store refused to {what}", _short(e), "check the etcd server's log") from None
            self._good = self.endpoints.index(endpoint)
            return out
        raise ClusterUnreachable(f"Cannot {what}: the cluster store {self.url} does not answer",
                                 "; ".join(errors) + f" (timeout {self.timeout:g} s per endpoint); nothing was changed",
                                 "start etcd or check --store / NETDIAG_CLUSTER_STORE and the route to it, then try again")

    # -- reading ----------------------------------------------------------------------------------
    def _range(self, key: str, prefix: bool) -> tuple[list[tuple[str, object, dict]], int]:
        payload = {"key": b64(key)}
        if prefix:
            payload["range_end"] = _range_end(key)
        res = self.call(lambda c: c.post(c.get_url("/kv/range"), json=payload), "read the cluster store")
        out = []
        for kv in res.get("kvs", []):
            raw = base64.b64decode(kv.get("value", ""))
            try:
                value = json.loads(raw) if raw else None
            except ValueError:
                value = None  # not ours: skipped by the readers (they check shapes)
            meta = {"create_revision": int(kv.get("create_revision", 0)), "mod_revision": int(kv.get("mod_revision", 0)),
                    "lease": int(kv.get("lease", 0))}
            out.append((base64.b64decode(kv["key"]).decode(errors="replace"), value, meta))
        return out, int(res.get("header", {}).get("revision", 0))

    def get(self, key: str):
        found, _ = self._range(key, False)
        return found[0][1] if found else None

    def prefix(self, prefix: str) -> tuple[list[tuple[str, object, dict]], int]:
        """Every (key, value, meta) under `prefix`, and the store's revision they were read at."""
        return self._range(prefix, True)

    # -- writing ----------------------------------------------------------------------------------
    def txn(self, compare: Iterable[dict], success: Iterable[dict], failure: Iterable[dict] = (), what: str = "update the cluster store") -> bool:
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        res = self.call(lambda c: c.post(c.get_url("/kv/txn"), data=json.dumps(body)), what)
        return bool(res.get("succeeded"))

    # -- leases -----------------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        res = self.call(lambda c: c.post(c.get_url("/lease/grant"), json={"TTL": ttl, "ID": 0}), "take a membership lease")
        return int(res["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's remaining TTL after the refresh; <= 0 when it already expired."""
        res = self.call(lambda c: c.post(c.get_url("/lease/keepalive"), json={"ID": lease}), "keep the membership lease alive")
        return int((res.get("result") or {}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        self.call(lambda c: c.post(c.get_url("/kv/lease/revoke"), json={"ID": lease}), "end the membership lease")

    # -- watching ---------------------------------------------------------------------------------
    def watch(self, prefix: str, start_revision: int, on_event: Callable[[str, str, object], None]) -> Callable[[], None]:
        """Call on_event(type 'PUT'|'DELETE', key, value) for every change under `prefix` from
        `start_revision` on, from a thread of etcd3gw's; returns a cancel function. A stream that
        dies says nothing: the agent's periodic re-read covers that."""
        def start(c):
            return c.watch_prefix(prefix, start_revision=start_revision)

        events, cancel = self.call(start, "watch the cluster store")

        def pump():
            try:
                for ev in events:
                    kv = ev.get("kv", {})
                    raw = kv.get("value", b"")
                    try:
                        value = json.loads(raw) if raw else None
                    except ValueError:
                        value = None
                    key = kv.get("key", b"")
                    on_event(ev.get("type", "PUT"), key.decode(errors="replace") if isinstance(key, bytes) else str(key), value)
            except Exception:  # noqa: BLE001 - a broken stream ends the watch; the re-read recovers
                pass

        threading.Thread(target=pump, daemon=True, name="etcd-watch").start()
        return cancel


def _short(e: Exception) -> str:
    text = " ".join(str(a) for a in getattr(e, "args", ()) if a) or type(e).__name__
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower() or "Timeout" in type(e).__name__:
        return "timed out"
    if "No route to host" in text:
        return "no route to host"
    return text[:200]
