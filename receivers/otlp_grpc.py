"""OTLP/gRPC: `TraceService/Export` and `LogsService/Export` on a grpcio server (each only when the
receiver is in a pipeline of that signal; otherwise grpc answers UNIMPLEMENTED).

The method is registered with a raw-bytes deserializer so that the receiver, not grpc, parses the
request: an undecodable body is answered INVALID_ARGUMENT with a clear message.
"""

from __future__ import annotations

import functools
import logging
from concurrent import futures
from typing import TYPE_CHECKING

import grpc

from spanpipe import admission
from spanpipe.configtypes import parse_endpoint
from spanpipe.errors import PipelineError
from spanpipe.receivers.otlp import client_metadata

if TYPE_CHECKING:
    from spanpipe.receivers.otlp import GrpcProtocol, OtlpReceiver, Signal

log = logging.getLogger("spanpipe.receivers.otlp.grpc")

class OtlpGrpcServer:
    def __init__(self, receiver: OtlpReceiver, config: GrpcProtocol) -> None:
        self.receiver, self.config = receiver, config
        self.host, self.port = parse_endpoint(config.endpoint)
        self._server: grpc.Server | None = None
        self._authenticate = None

    def _export(self, signal: Signal, request: bytes, context: grpc.ServicerContext):
        if self._authenticate is not None:
            token = dict(context.invocation_metadata()).get("authorization")
            if not self._authenticate(token):
                self.receiver.count_refused_request("unauthenticated")
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            try:
                admission.check()
            except PipelineError:
                self.receiver.count_refused_request("memory_limit")
                raise
            with admission.decoding(request):
                decoded = self.receiver.decode(signal, request)
            metadata = client_metadata(context.invocation_metadata()) if self.config.include_metadata else {}
            self.receiver.deliver(signal, decoded, metadata)
        except PipelineError as exc:
            context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))
        except Exception as exc:  # noqa: BLE001 - never let a request take the server down
            log.exception("unexpected error handling an export")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
        return signal.response(decoded)

    def start(self) -> None:
        self._authenticate = self.receiver.authenticator(self.config)
        options = [("grpc.max_receive_message_length", int(self.config.max_recv_msg_size_mib * 1024 * 1024)),
                   ("grpc.so_reuseport", 0)]
        if self.config.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", self.config.max_concurrent_streams))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.config.workers,
                                                        thread_name_prefix="otlp-grpc"),
                             options=options)
        server.add_generic_rpc_handlers(tuple(
            grpc.method_handlers_generic_handler(signal.grpc_service, {
                "Export": grpc.unary_unary_rpc_method_handler(
                    functools.partial(self._export, signal),
                    request_deserializer=None,
                    response_serializer=lambda m: m.SerializeToString(),
                ),
            }) for signal in self.receiver.signals()))
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            if self.config.tls is not None:
                bound = server.add_secure_port(address, self.config.tls.grpc_credentials())
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if not bound:
            raise OSError(f"{self.receiver.id} (grpc): cannot listen on {self.host}:{self.port} (address in use?)")
        self.port = bound
        server.start()
        self._server = server
        log.info("OTLP gRPC receiver listening on %s:%d%s", self.host, self.port,
                 " (TLS)" if self.config.tls else "")

    def stop(self, grace: float = 30.0) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
