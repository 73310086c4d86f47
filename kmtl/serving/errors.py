"""Errors raised by the TF Serving clients (`RestClient`, `GrpcClient`)."""

from __future__ import annotations

from typing import Optional

from kmtl.errors import KmtlError


class ServingError(KmtlError):
    """A request to TF Serving failed: a refused request, or no answer after the retries.

    The message says where the request went, the HTTP status or gRPC code and the server's
    own error text (TF Serving answers ``{"error": "..."}``), or, after retries, how many
    attempts were made and the last cause.

    Args:
        message: the full message.
        url: the URL (REST) or ``target/Method`` (gRPC) of the request.
        status: the HTTP status (an ``int``) or gRPC code name (e.g. ``"NOT_FOUND"``);
            ``None`` when no answer came back (connection refused, timeout).
        server_error: the server's error text, when it sent one.
        attempts: how many attempts were made.

    Example:
        >>> try:
        ...     client.predict({"text": ["hi"]}, signature="nope")
        ... except ServingError as err:
        ...     print(err.status, err.server_error)
        400 Serving signature key "nope" not found.
    """

    def __init__(self, message: str, *, url: Optional[str] = None, status=None,
                 server_error: Optional[str] = None, attempts: int = 1):
        super().__init__(message)
        self.url = url
        self.status = status
        self.server_error = server_error
        self.attempts = attempts
