"""One HTTP request to the API under test, JSON in and out, from a worker thread (the
server runs on the test's event loop): what the API tests share."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any


async def http_call(
    url: str,
    method: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON answer or None) of `method url` with `body` as JSON (or
    `raw` bytes), a Bearer `token` and extra `headers`; an error status is an answer."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)

    def send() -> tuple[int, dict[str, str], Any]:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read()
            return exc.code, dict(exc.headers), json.loads(text) if text else None

    return await asyncio.to_thread(send)
