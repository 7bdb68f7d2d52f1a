"""A loopback HTTP proxy in front of the kube-apiserver that counts the requests passing through.

The operator under benchmark talks to the proxy (plain HTTP on 127.0.0.1); the proxy talks
TLS to the apiserver and streams responses through unchanged, watches included. Counting at
the wire catches every request: the operator's own calls and kopf's (watches, finalizer and
annotation patches, event posts).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import re
import ssl
import threading

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}
_RESOURCE = re.compile(r"^/apis?/(?:[^/]+/)?v[^/]+/(?:namespaces/[^/]+/)?(?P<rest>.*)$")


def classify(method: str, path: str, query: str) -> str:
    """'PATCH rlhfjobs/status', 'GET pytorchjobs (watch)', ...: the resource and subresource only."""
    match = _RESOURCE.match(path)
    parts = (match.group("rest") if match else path).split("/")
    resource = parts[0] + (f"/{parts[2]}" if len(parts) > 2 else "")
    watch = " (watch)" if "watch=true" in query or "watch=1" in query else ""
    return f"{method} {resource}{watch}"


class CountingProxy:
    def __init__(self, upstream: str, ca_file: str):
        self.upstream = upstream.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=ca_file)
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
        self.counts[classify(request.method, request.path, request.query_string)] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        # skip_auto_headers: a request without Content-Type must stay so (the apiserver reads it as
        # JSON; aiohttp would add application/octet-stream, which it refuses).
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body or None, ssl=self.ssl,
                                         skip_auto_headers=("Content-Type",)) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP})
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientPayloadError, ConnectionResetError):
                return response  # a watch cut short (e.g. the apiserver or the client went away)
            await response.write_eof()
            return response
