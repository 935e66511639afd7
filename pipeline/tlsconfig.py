"""TLS settings with otelcol's keys, for servers (receivers, query API) and clients (exporters).

```yaml
tls: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt}   # a server
tls: {insecure: false, ca_file: ca.crt, cert_file: c.crt, key_file: c.key}   # a client
```
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
from pydantic import BaseModel, ConfigDict, model_validator


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None


class ServerTLS(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    min_version: str = "1.2"

    @model_validator(mode="after")
    def _check(self) -> ServerTLS:
        for what, path in (("cert_file", self.cert_file), ("key_file", self.key_file),
                           ("client_ca_file", self.client_ca_file)):
            if path and not Path(path).is_file():
                raise ValueError(f"{what}: no such file {path}")
        if self.min_version not in ("1.2", "1.3"):
            raise ValueError(f"min_version: use '1.2' or '1.3', got '{self.min_version}'")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if self.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(self.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def grpc_credentials(self) -> grpc.ServerCredentials:
        chain = (_read(self.key_file, "key_file"), _read(self.cert_file, "cert_file"))
        ca = _read(self.client_ca_file, "client_ca_file")
        return grpc.ssl_server_credentials([chain], root_certificates=ca, require_client_auth=ca is not None)


class ClientTLS(BaseModel):
    model_config = ConfigDict(extra="forbid")
    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name_override: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ClientTLS:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        for what in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, what)
            if path and not Path(path).is_file():
                raise ValueError(f"{what}: no such file {path}")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(_read(self.ca_file, "ca_file"), _read(self.key_file, "key_file"),
                                            _read(self.cert_file, "cert_file"))
