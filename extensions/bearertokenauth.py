"""The `bearertokenauth` extension (otelcol's shape): a shared token that receivers and the query
API require when their `auth: {authenticator: bearertokenauth}` names it.

```yaml
extensions:
  bearertokenauth:
    token: ${env:SPANPIPE_TOKEN}     # or: filename: /run/secrets/token (re-read when it changes)
    scheme: Bearer
```
Clients send `Authorization: Bearer <token>` (HTTP header or gRPC metadata).
"""

from __future__ import annotations

import hmac
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from spanpipe.component import Extension
from spanpipe.component import ComponentConfig
from spanpipe.registry import Factory


class AuthSettings(BaseModel):
    """`auth:` under a receiver protocol or the query API."""

    model_config = ConfigDict(extra="forbid")
    authenticator: str


class BearerTokenAuthConfig(ComponentConfig):
    token: str | None = None
    filename: str | None = None
    scheme: str = "Bearer"

    def validate_config(self) -> None:
        if bool(self.token) == bool(self.filename):
            raise ValueError("set exactly one of token, filename")


class BearerTokenAuthExtension(Extension):
    def __init__(self, component_id: str, config: BearerTokenAuthConfig) -> None:
        super().__init__(component_id)
        self.config = config
        self._lock = threading.Lock()
        self._token = config.token or ""
        self._mtime = -1.0

    def start(self) -> None:
        if self.config.filename:
            self._reload()

    def _reload(self) -> None:
        path = Path(self.config.filename)  # type: ignore[arg-type]
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise RuntimeError(f"{self.id}: cannot read token file {path}: {exc.strerror}") from None
        if mtime != self._mtime:
            with self._lock:
                self._token, self._mtime = path.read_text().strip(), mtime

    def authenticate(self, authorization: str | None) -> bool:
        """True when the `Authorization` value carries the token (constant-time compare)."""
        if self.config.filename:
            try:
                self._reload()
            except RuntimeError:
                return False
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != self.config.scheme.lower():
            return False
        return hmac.compare_digest(value.strip().encode(), self._token.encode())

    def header(self) -> str:
        return f"{self.config.scheme} {self._token}"


factory = Factory("bearertokenauth", "extensions", BearerTokenAuthConfig,
                  lambda cid, cfg: BearerTokenAuthExtension(cid, cfg), capabilities=("authenticator",))
