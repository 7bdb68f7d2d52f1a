"""A loopback HTTP proxy in front of the kube-apiserver that counts, and can disturb, the requests
passing through.

The operator under benchmark talks to the proxy (plain HTTP on 127.0.0.1); the proxy talks
TLS to the apiserver and streams responses through unchanged, watches included. Counting at
the wire catches every request: the operator's own calls and kopf's (watches, list calls).

With `Faults`, it is the chaos test's fault injector: at random (seeded) it answers a request
with an error without passing it on (the request never happened), passes it on and then answers
with an error (it happened, but the client cannot know), refuses an update with 409 Conflict, or
ends a watch with a 410 Gone error event, as the apiserver does when a watch's resourceVersion
has expired.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import random
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}
_RESOURCE = re.compile(r"^/apis?/(?:[^/]+/)?v[^/]+/(?:namespaces/[^/]+/)?(?P<rest>.*)$")
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_ERRORS = ((500, "InternalError", "etcdserver: request timed out"),
           (503, "ServiceUnavailable", "the server is currently unable to handle the request"),
           (429, "TooManyRequests", "the server has received too many requests and has asked us to try again later"))


def proxy_kubeconfig(token: str, port: int, path: Path) -> str:
    """A kubeconfig file at `path` that reaches the API server through the proxy on `port`."""
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "admin"}}],
        "current-context": "proxy",
    }
    path.write_text(json.dumps(config))
    return str(path)


def classify(method: str, path: str, query: str) -> str:
    """'PATCH rlhfjobs/status', 'GET pytorchjobs (watch)', ...: the resource and subresource only."""
    match = _RESOURCE.match(path)
    parts = (match.group("rest") if match else path).split("/")
    resource = parts[0] + (f"/{parts[2]}" if len(parts) > 2 else "")
    watch = " (watch)" if "watch=true" in query or "watch=1" in query else ""
    return f"{method} {resource}{watch}"


@dataclass
class Faults:
    """How often each fault is injected (probabilities per request; watches: seconds)."""

    error_before: float = 0.0   # any request: a 500/503/429 answer, not passed on
    error_after: float = 0.0    # writes: passed on, then a 500 answer instead of the real one
    conflict: float = 0.0       # updates (PATCH, PUT): 409 Conflict, not passed on
    watch_expiry: tuple[float, float] | None = None  # a watch ends with 410 Gone after uniform(a, b) s
    seed: int = 0
    enabled: bool = True
    injected: collections.Counter = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self, p: float) -> bool:
        return self.enabled and p > 0 and self._rng.random() < p

    def pick(self, options):
        return self._rng.choice(options)

    def uniform(self, low: float, high: float) -> float:
        return self._rng.uniform(low, high)


class CountingProxy:
    def __init__(self, upstream: str, ca_file: str, faults: Faults | None = None):
        self.upstream = upstream.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=ca_file)
        self.faults = faults
        self.counts: collections.Counter[str] = collections.Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="counting-proxy")

    def start(self) -> "CountingProxy":
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)
        except (TimeoutError, concurrent.futures.TimeoutError):
            pass  # a watch still open upstream; the loop stops regardless
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _close(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:  # open watches and their connections: end them quietly
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        await self._runner.cleanup()
        await self._session.close()

    def snapshot(self) -> collections.Counter[str]:
        return collections.Counter(self.counts)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=True)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        kind = classify(request.method, request.path, request.query_string)
        self.counts[kind] += 1
        faults, write, watch = self.faults, request.method in _WRITES, kind.endswith("(watch)")
        if faults is not None and not watch:
            if faults.draw(faults.error_before):
                return self._error(kind, "error_before", *faults.pick(_ERRORS))
            if request.method in ("PATCH", "PUT") and faults.draw(faults.conflict):
                return self._error(kind, "conflict", 409, "Conflict", "Operation cannot be fulfilled: the object "
                                   "has been modified; please apply your changes to the latest version and try again")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        # skip_auto_headers: a request without Content-Type must stay so (the apiserver reads it as
        # JSON; aiohttp would add application/octet-stream, which it refuses).
        try:
            async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                             data=body or None, ssl=self.ssl,
                                             skip_auto_headers=("Content-Type",)) as upstream:
                if faults is not None and write and faults.draw(faults.error_after):
                    await upstream.read()  # it happened upstream; the client hears otherwise
                    return self._error(kind, "error_after", *_ERRORS[0])
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP})
                await response.prepare(request)
                expiry = faults.watch_expiry if faults is not None and faults.enabled and watch else None
                await (self._stream_watch(upstream, response, kind, expiry) if expiry
                       else self._stream(upstream, response))
                return response
        except aiohttp.ClientConnectionError as error:  # e.g. the apiserver is restarting
            return web.json_response(_status(502, "BadGateway", f"proxy: {error}"), status=502)

    @staticmethod
    async def _stream(upstream: aiohttp.ClientResponse, response: web.StreamResponse) -> None:
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except (aiohttp.ClientPayloadError, ConnectionResetError):
            pass  # a watch cut short (e.g. the apiserver or the client went away)

    async def _stream_watch(self, upstream: aiohttp.ClientResponse, response: web.StreamResponse, kind: str,
                            expiry: tuple[float, float]) -> None:
        """Pass a watch on line by line; after a random time, end it as an expired one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.faults.uniform(*expiry)
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    line = await asyncio.wait_for(upstream.content.readline(), timeout=left)
                except asyncio.TimeoutError:
                    break
                if not line:
                    await response.write_eof()
                    return
                await response.write(line)
            self.faults.injected[f"watch_expiry {kind}"] += 1
            gone = {"type": "ERROR", "object": _status(410, "Expired", "too old resource version: expired (proxy)")}
            await response.write(json.dumps(gone).encode() + b"\n")
            await response.write_eof()
        except (aiohttp.ClientPayloadError, ConnectionResetError):
            pass

    def _error(self, kind: str, fault: str, code: int, reason: str, message: str) -> web.Response:
        self.faults.injected[f"{fault} {kind}"] += 1
        headers = {"Retry-After": "1"} if code == 429 else None
        return web.json_response(_status(code, reason, message), status=code, headers=headers)


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
