"""What `RestClient` and `GrpcClient` share: their settings and the context-manager protocol."""

from __future__ import annotations

from typing import Optional


class ServingClient:
    """Base of the TF Serving clients.

    Args:
        model: the model name the server serves.
        version: a fixed version, or ``None`` for the server's latest.
        timeout: seconds per attempt.
        retries: extra attempts when the server is unavailable (at most ``retries + 1`` tries).
        backoff: seconds before the first retry, doubled for each next one.
    """

    def __init__(self, model: str = "demo", version: Optional[int] = None, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.2):
        self.model = model
        self.version = version
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    @property
    def address(self) -> str:
        raise NotImplementedError

    def __repr__(self):
        return (f"{type(self).__name__}({self.address!r}, model={self.model!r}, version={self.version!r}, "
                f"timeout={self.timeout}, retries={self.retries})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Release connections (a later call opens new ones)."""
