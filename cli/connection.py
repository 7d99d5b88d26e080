"""The flags every command that talks to a server shares (--server, --timeout,
--json, TLS and tokens), and the Client keywords they make."""
from __future__ import annotations

import argparse
from pathlib import Path

from netscope.client.client import DEFAULT_SERVER
from netscope.client.connection import DEFAULT_PORT
from netscope.client.connection import ENV_CA, ENV_CERT, ENV_KEY

from .preflight import ReadFile, declare


def client_parser(sub, name: str, help: str, run, *, fleet: bool = False,
                  timeout_help: str = "deadline per call in seconds", **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, **kw)
    if fleet:  # several servers share the work
        p.add_argument("--server", dest="servers", action="append", metavar="HOST[:PORT]",
                       help=f"a server (repeatable; default {DEFAULT_SERVER}, or $NETSCOPE_SERVER; "
                            f"port {DEFAULT_PORT} when omitted)")
        p.set_defaults(server=None)
    else:
        p.add_argument("--server", default=DEFAULT_SERVER, metavar="HOST[:PORT]",
                       help=f"the server (default {DEFAULT_SERVER}, or $NETSCOPE_SERVER; port {DEFAULT_PORT} when "
                            "omitted)")
    p.add_argument("--timeout", type=float, default=120.0, help=timeout_help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    g = p.add_argument_group("security", "TLS and tokens; each falls back to its environment variable")
    g.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    g.add_argument("--tls-ca", metavar="FILE", help="PEM CA that signed the server's certificate; implies --tls "
                                                    "($NETSCOPE_TLS_CA)")
    g.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate for mutual TLS ($NETSCOPE_TLS_CERT)")
    g.add_argument("--tls-key", metavar="FILE", help="PEM key of --tls-cert ($NETSCOPE_TLS_KEY)")
    g.add_argument("--tls-server-name", metavar="NAME", help="the name the server's certificate carries, "
                                                             "when it differs from the host dialled")
    token = g.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token ($NETSCOPE_TOKEN); --token-file keeps it out of `ps`")
    token.add_argument("--token-file", metavar="FILE", help="file whose first line is the bearer token")
    p.set_defaults(run=run)
    declare(p, ReadFile("--tls-ca", env=ENV_CA), ReadFile("--tls-cert", env=ENV_CERT),
            ReadFile("--tls-key", env=ENV_KEY), ReadFile("--token-file"))
    return p


def connection(args) -> dict:
    """Client keywords from the security flags (None: the Client reads the
    environment variable). Raises OSError for an unreadable --token-file."""
    token = args.token
    if args.token_file:
        try:
            lines = [l.strip() for l in Path(args.token_file).read_text().splitlines() if l.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise OSError(f"cannot read --token-file {args.token_file}: {getattr(exc, 'strerror', None) or exc}") from None
        if not lines:
            raise OSError(f"--token-file {args.token_file} is empty")
        token = lines[0]
    return {"tls": args.tls, "root_certificates": args.tls_ca, "client_cert": args.tls_cert,
            "client_key": args.tls_key, "token": token, "server_name_override": args.tls_server_name}
