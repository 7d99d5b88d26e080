"""Who may call what: TLS credentials, bearer tokens with roles, and the
guard against serving a non-loopback address in the clear.

The one place that knows roles. `REQUIRED_ROLE` maps each full method name to
the role it needs; a method not in the table needs `admin`, so a new RPC is
closed until someone lists it here. Tokens travel as `authorization: Bearer
TOKEN` metadata and are compared in constant time; no token is ever logged or
echoed in a message.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_status import rpc_status

from ..errors import ServerError, PermissionDenied, Unauthenticated, rich_status

log = logging.getLogger("netscope.security")

OPEN, READ, ADMIN = "open", "read", "admin"
ROLES = (READ, ADMIN)  # what a token may hold; each includes the ones before it
_RANK = {OPEN: 0, READ: 1, ADMIN: 2}

REFLECTION_METHODS = ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")

# Full method name -> the role it needs. Anything not listed needs ADMIN.
REQUIRED_ROLE: dict[str, str] = {
    # Load balancers and probes must reach health without a token.
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    "/grpc.health.v1.Health/List": OPEN,
    **{m: READ for m in REFLECTION_METHODS},  # OPEN with --open-reflection
    **{f"/netscope.v1.Inspector/{m}": READ for m in (
        "ListModels", "GetModelInfo", "Predict", "GetFeatureMaps", "GetKernels", "GetLayerStats", "Explain",
        "ExplainStream", "GetServerInfo")},
    "/netscope.v1.Inspector/LoadModel": ADMIN,
    "/netscope.v1.Inspector/UnloadModel": ADMIN,
    # The Open Inference Protocol. Liveness and readiness are what grpc.health.v1 already says to anyone, and
    # Kubernetes probes carry no token: open. Model names, metadata and inference: read. The repository's
    # load and unload: admin, as LoadModel.
    "/inference.GRPCInferenceService/ServerLive": OPEN,
    "/inference.GRPCInferenceService/ServerReady": OPEN,
    **{f"/inference.GRPCInferenceService/{m}": READ for m in (
        "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer", "ModelConfig", "ModelStatistics",
        "RepositoryIndex")},
    "/inference.GRPCInferenceService/RepositoryModelLoad": ADMIN,
    "/inference.GRPCInferenceService/RepositoryModelUnload": ADMIN,
}


class ConfigError(ValueError):
    """A security setting the server cannot start with (a bad certificate,
    key or tokens file, or a public address in the clear). The message names
    the file or setting and what to change; it never contains a token."""


def required_role(method: str, open_reflection: bool = False) -> str:
    """The role `method` ("/package.Service/Method") needs: open, read or admin."""
    if open_reflection and method in REFLECTION_METHODS:
        return OPEN
    return REQUIRED_ROLE.get(method, ADMIN)


# ---------------------------------------------------------------- tokens

def read_tokens(path: str | Path) -> list[tuple[bytes, str]]:
    """Parse a tokens file: one `TOKEN ROLE` a line (role `read` or `admin`),
    blank lines and `#` comments allowed. Returns [(token bytes, role)].
    Raises ConfigError naming the file and line number (never the token) for
    a malformed line, an unknown role, a repeated token or an empty file."""
    path = Path(path)
    text = _read(path, "--auth-tokens")
    tokens: list[tuple[bytes, str]] = []
    seen: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        comment = next((i for i, w in enumerate(parts) if w.startswith("#")), len(parts))
        parts = parts[:comment]  # a `#` word starts a comment, to the end of the line
        if not parts:
            continue
        where = f"--auth-tokens {path}, line {number}"
        if len(parts) != 2:
            raise ConfigError(f"{where}: expected `TOKEN ROLE` (two words, role read or admin); "
                              f"found {len(parts)} word(s)")
        token, role = parts
        if role not in ROLES:
            raise ConfigError(f"{where}: role must be read or admin; got {role[:16]!r}")
        if not token.isascii() or not token.isprintable():
            raise ConfigError(f"{where}: a token must be printable ASCII (it travels as gRPC metadata)")
        if len(token) < 16:
            raise ConfigError(f"{where}: the token is {len(token)} characters; use at least 16 "
                              "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        raw = token.encode()
        if raw in seen:
            raise ConfigError(f"{where}: this token is listed twice")
        seen.add(raw)
        tokens.append((raw, role))
    if not tokens:
        raise ConfigError(f"--auth-tokens {path}: no tokens; write one `TOKEN ROLE` a line")
    return tokens


def role_of(presented: bytes, tokens: list[tuple[bytes, str]]) -> str | None:
    """The role of the configured token equal to `presented`, or None. Every
    configured token is compared, in constant time, with no early exit; both
    sides are hashed first so that even the length of a token does not show
    in the time taken."""
    digest = hashlib.sha256(presented).digest()
    found = None
    for token, role in tokens:
        if hmac.compare_digest(digest, hashlib.sha256(token).digest()):
            found = role
    return found


def bearer(metadata) -> bytes | None:
    """The token of an `authorization: Bearer TOKEN` header, or None."""
    for key, value in metadata or ():
        if key == "authorization":
            value = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip().encode("utf-8", "replace")
            return b""
    return None


class TokenAuth(grpc.ServerInterceptor):
    """Refuses a call whose bearer token is missing or unknown
    (UNAUTHENTICATED) or whose role is below the method's (PERMISSION_DENIED)
    before any of the call's work is done."""

    def __init__(self, tokens: list[tuple[bytes, str]], *, open_reflection: bool = False):
        self.tokens = tokens
        self.open_reflection = open_reflection

    def intercept_service(self, continuation, details):
        need = required_role(details.method, self.open_reflection)
        if need == OPEN:
            return continuation(details)
        presented = bearer(details.invocation_metadata)
        role = role_of(presented, self.tokens) if presented else None
        if role is None:
            why = "no token was sent" if presented is None else "the token is not one this server knows"
            error = Unauthenticated(f"send `authorization: Bearer <token>` metadata with a token from the server's "
                                    f"--auth-tokens file ({why}); with the netscope client use --token/--token-file "
                                    f"or $NETSCOPE_TOKEN", reason="TOKEN_MISSING" if presented is None else
                                    "TOKEN_UNKNOWN")
        elif _RANK[role] < _RANK[need]:
            error = PermissionDenied(f"{details.method} needs a token with role {need}; this token's role is {role}",
                                     reason="ROLE_TOO_LOW", metadata={"required_role": need, "role": role})
        else:
            return continuation(details)
        handler = continuation(details)
        if handler is None:  # no such method: UNIMPLEMENTED, as without tokens
            return None
        log.info("refused %s: %s", details.method, error.reason)  # never the token
        return _refusal(handler, error)


def _refusal(handler: grpc.RpcMethodHandler, error: ServerError) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as `handler` that only aborts with
    `error`, its google.rpc.Status details in the trailers as any other error's."""
    status = rpc_status.to_status(rich_status(error))

    def unary(request, context):
        context.abort_with_status(status)

    def streaming(request, context):
        context.abort_with_status(status)
        yield  # pragma: no cover - makes this a generator, as a streaming handler must be

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming)
    return grpc.unary_unary_rpc_method_handler(unary)


# ---------------------------------------------------------------- TLS

def server_credentials(cert: str | Path, key: str | Path, client_ca: str | Path = "") -> grpc.ServerCredentials:
    """TLS credentials from PEM files: the server's certificate chain and its
    unencrypted private key; with `client_ca`, mutual TLS (clients must present
    a certificate signed by that CA). Raises ConfigError naming the file and
    what is wrong (missing, unreadable, not PEM, key not matching the cert)."""
    cert_pem = _read_pem(cert, "--tls-cert", "CERTIFICATE")
    key_pem = _read_pem(key, "--tls-key", "PRIVATE KEY")
    # grpc only says "failed to bind" for a bad pair; OpenSSL (stdlib ssl) says which part is wrong.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        why = str(exc.reason or exc).lower()
        if "mismatch" in why:
            raise ConfigError(f"--tls-key {key} is not the private key of --tls-cert {cert}") from None
        if "decrypt" in why or "bad password" in why or "encrypted" in key_pem.decode("latin-1").lower():
            raise ConfigError(f"--tls-key {key} is encrypted; gRPC needs an unencrypted PEM key") from None
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: not a usable certificate and key ({exc.reason or exc})") from None
    ca_pem = None
    if client_ca:
        ca_pem = _read_pem(client_ca, "--tls-client-ca", "CERTIFICATE")
        try:
            ssl.create_default_context(cadata=ca_pem.decode("latin-1"))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"--tls-client-ca {client_ca}: not a usable CA certificate ({exc})") from None
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem,
                                       require_client_auth=ca_pem is not None)


def _read(path: Path, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{flag} {path}: is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"{flag} {path}: not readable by this user") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {path}: not a text file") from None
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None


def _read_pem(path: str | Path, flag: str, kind: str) -> bytes:
    text = _read(Path(path), flag)
    if "-----BEGIN" not in text or kind not in text:
        raise ConfigError(f"{flag} {path}: no PEM {kind} in it (expected a -----BEGIN ...{kind}----- block)")
    return text.encode("latin-1", "replace")


# ---------------------------------------------------------------- the plaintext guard

def is_loopback(address: str) -> bool:
    """True when `address` (host:port, [v6]:port, unix:path) is reachable only
    from this machine: 127.0.0.0/8, ::1, localhost or a unix socket."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rsplit(":", 1)[0] if ":" in address else address
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "" (every interface)
        return False


@dataclass
class Security:
    """What a server's config asks for: credentials for its port (None:
    plaintext) and the interceptors to install."""

    credentials: grpc.ServerCredentials | None
    interceptors: list[grpc.ServerInterceptor]


def configure(address: str, *, tls_cert: str = "", tls_key: str = "", tls_client_ca: str = "",
              auth_tokens: str = "", open_reflection: bool = False, insecure: bool = False,
              warn: bool = True) -> Security:
    """Check a server's security settings and build them. Raises ConfigError
    for a half-given TLS pair, a client CA without TLS, a bad file, or a
    non-loopback `address` with neither TLS nor tokens unless `insecure`
    (then, with `warn`, logs a warning)."""
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("TLS needs both --tls-cert and --tls-key" + (
            f" (only --tls-cert {tls_cert} was given)" if tls_cert else f" (only --tls-key {tls_key} was given)"))
    if tls_client_ca and not tls_cert:
        raise ConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key too")
    credentials = server_credentials(tls_cert, tls_key, tls_client_ca) if tls_cert else None
    interceptors = []
    if auth_tokens:
        interceptors.append(TokenAuth(read_tokens(auth_tokens), open_reflection=open_reflection))
    if credentials is None and not auth_tokens and not is_loopback(address):
        if not insecure:
            raise ConfigError(
                f"refusing to serve {address} without TLS or tokens: anyone who reaches it could load and unload "
                "models. Give --tls-cert/--tls-key and/or --auth-tokens, listen on 127.0.0.1, or pass --insecure "
                "if the network is trusted")
        if warn:
            log.warning("serving %s in the clear with no tokens (--insecure): anyone who reaches it may call every RPC",
                        address)
    elif warn and credentials is None and auth_tokens and not is_loopback(address):
        log.warning("tokens on %s travel in the clear without TLS; give --tls-cert/--tls-key", address)
    return Security(credentials, interceptors)
