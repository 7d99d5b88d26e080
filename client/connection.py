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
    if tls or root_certificates or client_cert:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(root_certificates, "CA certificate"),
            private_key=_pem(client_key, "client key"), certificate_chain=_pem(client_cert, "client certificate"))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    if token:
        channel = grpc.intercept_channel(channel, BearerToken(_checked(token)))
    return channel


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
