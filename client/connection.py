"""The client's channel: plaintext or TLS (optionally mutual), and a bearer
token on every call. Keywords win; environment variables fill what is left:
NETSCOPE_TLS_CA, NETSCOPE_TLS_CERT, NETSCOPE_TLS_KEY, NETSCOPE_TOKEN."""
from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Union

import grpc

ENV_CA, ENV_CERT, ENV_KEY, ENV_TOKEN = "NETSCOPE_TLS_CA", "NETSCOPE_TLS_CERT", "NETSCOPE_TLS_KEY", "NETSCOPE_TOKEN"
DEFAULT_PORT = 50051  # `netscope serve`'s; gRPC itself would dial 443 for a bare host

Pem = Union[bytes, str, Path]  # PEM bytes, or the path of a PEM file


class ConnectionSettingsError(ValueError):
    """TLS or token settings that cannot make a channel (half an mTLS pair, a token that cannot be metadata)."""


def open_channel(target: str, options: list, *, tls: bool = False, root_certificates: Pem | None = None,
                 client_cert: Pem | None = None, client_key: Pem | None = None, token: str | None = None,
                 server_name_override: str | None = None) -> grpc.Channel:
    """A channel to `target` ("host:port"). TLS when `tls` or a CA or client
    certificate is given (root_certificates None: the system's roots);
    client_cert + client_key: mutual TLS; server_name_override: the name the
    server's certificate must carry when it differs from the host dialled.
    `token` rides on every call, unary and streaming, as `authorization:
    Bearer TOKEN`. Raises ConnectionSettingsError (a ValueError) for half an
    mTLS pair or a token that cannot be metadata, OSError naming a PEM file
    that cannot be read."""
    root_certificates = _env(root_certificates, ENV_CA)
    client_cert = _env(client_cert, ENV_CERT)
    client_key = _env(client_key, ENV_KEY)
    token = _env(token, ENV_TOKEN)
    if bool(client_cert) != bool(client_key):
        raise ConnectionSettingsError(f"mutual TLS needs both a client certificate and its key (--tls-cert and --tls-key, "
                         f"or ${ENV_CERT} and ${ENV_KEY}); only the {'certificate' if client_cert else 'key'} was given")
    options = list(options)
    if server_name_override:
        options.append(("grpc.ssl_target_name_override", server_name_override))
    if uses_tls(tls, root_certificates, client_cert):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(root_certificates, "CA certificate"),
            private_key=_pem(client_key, "client key"), certificate_chain=_pem(client_cert, "client certificate"))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    if token:
        channel = grpc.intercept_channel(channel, BearerToken(_checked(token)))
    return channel


def uses_tls(tls: bool = False, root_certificates: Pem | None = None, client_cert: Pem | None = None) -> bool:
    """Whether open_channel makes a TLS channel for these keywords (and the environment)."""
    return bool(tls or _env(root_certificates, ENV_CA) or _env(client_cert, ENV_CERT))


def with_port(target: str) -> str:
    """`target` with netscope's port 50051 where it names none: "localhost" ->
    "localhost:50051", "::1" or "[::1]" -> "[::1]:50051". A target with a port,
    or with a gRPC scheme ("unix:/path", "dns:///host:port"), is kept as given."""
    target = target.strip()
    if not target or "/" in target or target.startswith(("unix:", "unix-abstract:", "vsock:")):
        return target
    if target.startswith("["):  # [v6] or [v6]:port
        return target if "]:" in target else f"{target}:{DEFAULT_PORT}"
    if target.count(":") > 1:  # a bare IPv6 address
        return f"[{target}]:{DEFAULT_PORT}"
    return target if ":" in target else f"{target}:{DEFAULT_PORT}"


def unreachable(message: str, target: str, tls: bool) -> str | None:
    """A person's reason for a call that never reached the server, from
    gRPC's transport text (UNAVAILABLE, no status details): nothing listening,
    a host that does not resolve, TLS on one side only, a certificate not
    trusted. None when `message` is not a transport failure (a server's own
    UNAVAILABLE keeps its words)."""
    low = message.lower()
    if "errors resolving" in low or "dns resolution failed" in low:
        return f"cannot resolve the host of {target}: check the name in --server (HOST:PORT)"
    if not ("failed to connect" in low or "handshake" in low or "socket closed" in low
            or "connection reset" in low or "connection refused" in low):
        return None
    if "connection refused" in low:
        return f"nothing is listening at {target}: is `netscope serve` running at {target}?"
    if "wrong_version_number" in low or "http_request" in low or "record_overflow" in low:
        return (f"the server at {target} speaks plaintext, and this client dialled it with TLS: drop --tls/--tls-ca "
                "(Client: tls=False, no root_certificates), or start the server with --tls-cert/--tls-key")
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        return (f"the server at {target} speaks TLS but its certificate is not trusted here: give the CA that "
                "signed it with --tls-ca FILE (Client: root_certificates=FILE), or --tls-server-name NAME "
                "when it names another host")
    if "certificate_required" in low or "handshake_failure" in low or "peer did not return a certificate" in low:
        return (f"the server at {target} wants a client certificate (mutual TLS): add --tls-cert FILE and "
                "--tls-key FILE (Client: client_cert=, client_key=)")
    if not tls and ("socket closed" in low or "connection reset" in low):
        return (f"the server at {target} closed the connection at once, as a TLS server does to a plaintext "
                "client: add --tls or --tls-ca FILE (Client: tls=True or root_certificates=FILE)")
    if "handshake" in low:
        return f"the TLS handshake with {target} failed: check --tls-ca, --tls-cert and --tls-key"
    return f"cannot connect to {target}: is `netscope serve` running at {target}?"


def _env(value, name: str):
    return os.environ.get(name) or None if value is None else value


def _pem(value: Pem | None, what: str) -> bytes | None:
    if value is None or value == "":
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        data = Path(value).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read the TLS {what} {value}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise OSError(f"the TLS {what} {value} is not PEM (no -----BEGIN line)")
    return data


def _checked(token: str) -> str:
    token = token.strip()
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ConnectionSettingsError("the token must be printable ASCII without spaces (it travels as gRPC metadata)")
    return token


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                           "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer TOKEN` to every call's metadata. (Call
    credentials would do the same but only on a TLS channel; tokens also work
    over plaintext loopback.)"""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:  # never show the token
        return "BearerToken(***)"

    def _details(self, d: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [m for m in (d.metadata or ()) if m[0] != "authorization"] + [self._header]
        return _CallDetails(d.method, d.timeout, metadata, d.credentials, getattr(d, "wait_for_ready", None),
                            getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)
