"""The client's request body as an httpx stream (read as the upstream takes it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
from starlette.types import Receive

from app.errors import PayloadTooLarge, RequestTimeout


class ClientDisconnected(Exception):
    """The client went away before the exchange finished; nobody to answer."""


class RequestBody(httpx.AsyncByteStream):
    """Streams ``receive`` to the upstream, enforcing ``max_body_bytes`` as it goes.

    A client that goes ``idle_timeout`` seconds without sending the next part of
    its body is cut off with 408 (slow-client protection: a trickled body must
    not hold an upstream connection open indefinitely).

    It remembers why it stopped, because a transport reports a failed upload
    as a generic send error.
    """

    def __init__(self, receive: Receive, limit: int | None, idle_timeout: float | None = None) -> None:
        self._receive = receive
        self._limit = limit
        self._idle_timeout = idle_timeout
        self.received = 0
        self.too_large = False
        self.disconnected = False
        self.timed_out = False
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        receive, limit, idle = self._receive, self._limit, self._idle_timeout
        more = True
        while more:
            if idle is None:
                message = await receive()
            else:
                try:
                    with anyio.fail_after(idle):
                        message = await receive()
                except TimeoutError:
                    self.timed_out = True
                    raise self._timed_out() from None
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnected("client disconnected during the request body")
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                self.received += len(chunk)
                if limit is not None and self.received > limit:
                    self.too_large = True
                    raise self._too_large()
                yield chunk
        self.finished = True

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body exceeds this route's limit of {self._limit} bytes.")

    def _timed_out(self) -> RequestTimeout:
        return RequestTimeout(f"The request body stalled for more than {self._idle_timeout} seconds.")

    def failure(self) -> Exception | None:
        """Why the upload stopped early, if it was the client's doing."""
        if self.too_large:
            return self._too_large()
        if self.timed_out:
            return self._timed_out()
        if self.disconnected:
            return ClientDisconnected("client disconnected during the request body")
        return None
