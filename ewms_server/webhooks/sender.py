"""One delivery attempt: a signed POST through tornado's AsyncHTTPClient (the one call site),
never following a redirect, with bounded timeouts; the answer's body is not kept."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

NO_ANSWER = 599
"""The status of an attempt that got no HTTP answer (tornado's, for timeouts and refusals)."""


def signature(secret: str, body: bytes) -> str:
    """X-EWMS-Signature: `sha256=<hex HMAC-SHA256 of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Answer:
    status: int
    error: str | None
    """why it is not a success, never with the URL or the body"""
    retry_after_s: float | None


class Sender:
    def __init__(self, secret: str, timeout_s: float, max_clients: int = 10) -> None:
        self._secret = secret
        self._timeout_s = timeout_s
        self._client = AsyncHTTPClient(force_instance=True, max_clients=max_clients)

    def close(self) -> None:
        self._client.close()

    async def post(self, url: str, body: str, *, delivery_id: str, event: str) -> Answer:
        raw = body.encode()
        request = HTTPRequest(
            url,
            method="POST",
            body=raw,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "ewms-server-webhooks",
                "X-EWMS-Delivery": delivery_id,
                "X-EWMS-Event": event,
                "X-EWMS-Signature": signature(self._secret, raw),
            },
            connect_timeout=self._timeout_s,
            request_timeout=self._timeout_s,
            follow_redirects=False,
            decompress_response=False,
            streaming_callback=lambda _chunk: None,  # the receiver's answer body is not kept
        )
        try:
            resp = await self._client.fetch(request, raise_error=False)
        except Exception as e:  # DNS failures and the like, before any answer
            return Answer(NO_ANSWER, f"{type(e).__name__}: {str(e)[:200]}", None)
        if 200 <= resp.code < 300:
            return Answer(resp.code, None, None)
        if resp.code == NO_ANSWER:
            err = resp.error
            return Answer(NO_ANSWER, f"no answer: {type(err).__name__}: {str(err)[:200]}", None)
        error = f"HTTP {resp.code}" + (" (redirects are not followed)" if 300 <= resp.code < 400 else "")
        return Answer(resp.code, error, _seconds(resp.headers.get("Retry-After")))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides
