"""What security costs per call: the token check alone, and ListModels (the
cheapest RPC) p50 on a loopback server in plaintext, with tokens, and with TLS
and tokens. Run: .venv/bin/python benchmarks/security_overhead.py"""
import pathlib
import statistics
import tempfile
import time

import trustme
from netscope.server.app import Server, ServerConfig
from netscope.server.rpc.security import role_of
from netscope.client import Client

toks = [(f"token-{i:02d}-abcdefghijklmnop".encode(), "read") for i in range(10)]
t = time.perf_counter(); n = 20000
for _ in range(n): role_of(b"token-09-abcdefghijklmnop", toks)
print(f"role_of, 10 tokens: {(time.perf_counter()-t)/n*1e6:.1f} us")
d = pathlib.Path(tempfile.mkdtemp())
(d/"t").write_text("token-00-abcdefghijklmnop read\n")
ca = trustme.CA(); leaf = ca.issue_cert("127.0.0.1")
ca.cert_pem.write_to_path(str(d/"ca")); leaf.private_key_pem.write_to_path(str(d/"key"))
(d/"cert").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
for name, cfg, kw in [("plaintext", {}, {}), ("tokens", {"auth_tokens": str(d/"t")}, {"token": "token-00-abcdefghijklmnop"}),
                      ("TLS+tokens", {"auth_tokens": str(d/"t"), "tls_cert": str(d/"cert"), "tls_key": str(d/"key")},
                       {"token": "token-00-abcdefghijklmnop", "root_certificates": str(d/"ca")})]:
    srv = Server(ServerConfig(address="127.0.0.1:0", store=str(d), **cfg)).start()
    with Client(f"127.0.0.1:{srv.port}", **kw) as c:
        for _ in range(50): c.list_models()
        lat = []
        for _ in range(500):
            s = time.perf_counter(); c.list_models(); lat.append((time.perf_counter()-s)*1e3)
    srv.stop(0)
    print(f"{name}: ListModels p50 {statistics.median(lat):.3f} ms")
