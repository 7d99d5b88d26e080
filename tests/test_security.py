"""Who may call what, through real servers on loopback: TLS, mutual TLS,
bearer tokens with roles, the --insecure guard, and reflection v1.
Certificates are made in the test with trustme."""
from __future__ import annotations

import logging
import time

import grpc
import pytest
import trustme
from grpc_reflection.v1alpha import reflection_pb2

from netscope.client import Client
from netscope.client.client import NetscopeError
from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.server.rpc.security import ConfigError, read_tokens, role_of

from .conftest import encode, run_netscope

READ_TOKEN = "read-token-5f1c0e9a7b3d42c8"
ADMIN_TOKEN = "admin-token-91d2a7e4c06b3f58"
MODELS = [ModelSpec("sq", "squeezenet1_1")]


run_cli = run_netscope  # this module's servers are its own, so no --server is added


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A server CA and certificate for 127.0.0.1/localhost, and a separate
    client CA with one client certificate, as PEM files."""
    root = tmp_path_factory.mktemp("pki")
    ca, client_ca = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    client = client_ca.issue_cert("netscope-client.example")
    files = {"ca": root / "ca.pem", "cert": root / "server.pem", "key": root / "server.key",
             "client_ca": root / "client-ca.pem", "client_cert": root / "client.pem", "client_key": root / "client.key",
             "other_ca": root / "other-ca.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["cert"].write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    client_ca.cert_pem.write_to_path(str(files["client_ca"]))
    files["client_cert"].write_bytes(b"".join(p.bytes() for p in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    trustme.CA().cert_pem.write_to_path(str(files["other_ca"]))
    return files


@pytest.fixture(scope="module")
def jpeg(photos):
    return encode(photos["chelsea"])


def start(tmp_path_factory, **security) -> Server:
    store = tmp_path_factory.mktemp("store")
    config = ServerConfig(address="127.0.0.1:0", models=MODELS, store=str(store), device="cpu", workers=4,
                          grace_s=1, **security)
    return Server(config).start()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    srv = start(tmp_path_factory, tls_cert=str(pki["cert"]), tls_key=str(pki["key"]))
    yield srv
    srv.stop(0)


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki):
    srv = start(tmp_path_factory, tls_cert=str(pki["cert"]), tls_key=str(pki["key"]),
                tls_client_ca=str(pki["client_ca"]))
    yield srv
    srv.stop(0)


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(f"# netscope tokens\n\n{READ_TOKEN} read   # dashboards\n{ADMIN_TOKEN} admin\n")
    return path


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, tokens_file):
    srv = start(tmp_path_factory, auth_tokens=str(tokens_file))
    yield srv
    srv.stop(0)


def port_of(srv: Server) -> str:
    return f"127.0.0.1:{srv.port}"


# ---------------------------------------------------------------- TLS

def test_tls_predict_from_client_and_cli(tls_server, pki, jpeg, tmp_path):
    with Client(port_of(tls_server), root_certificates=str(pki["ca"]), timeout=30) as c:
        assert c.predict("sq", jpeg, k=3)[0].top1.probability > 0
    with Client(port_of(tls_server), root_certificates=pki["ca"].read_bytes(), timeout=30) as c:  # PEM bytes
        assert c.health() == "SERVING"
    image = tmp_path / "cat.jpg"
    image.write_bytes(jpeg)
    code, out, err = run_cli("predict", "--server", port_of(tls_server), "--tls-ca", str(pki["ca"]), "--model", "sq",
                             "-k", "2", str(image))
    assert code == 0, err
    assert "cat.jpg" in out


def test_tls_env_vars(tls_server, pki, jpeg, monkeypatch):
    monkeypatch.setenv("NETSCOPE_TLS_CA", str(pki["ca"]))
    with Client(port_of(tls_server), timeout=30) as c:
        assert len(c.predict("sq", jpeg)) == 1


def test_plaintext_client_against_tls_server_is_unavailable_not_a_hang(tls_server, pki):
    started = time.monotonic()
    with Client(port_of(tls_server), timeout=5, retries=False) as c, pytest.raises(NetscopeError) as err:
        c.list_models()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 5
    with Client(port_of(tls_server), root_certificates=str(pki["other_ca"]), timeout=5, retries=False) as c, \
            pytest.raises(NetscopeError) as err:  # a CA that did not sign the server's certificate
        c.list_models()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_server, pki, jpeg):
    with Client(port_of(mtls_server), root_certificates=str(pki["ca"]), timeout=5, retries=False) as c, \
            pytest.raises(NetscopeError) as err:
        c.list_models()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    with Client(port_of(mtls_server), root_certificates=str(pki["ca"]), client_cert=str(pki["client_cert"]),
                client_key=str(pki["client_key"]), timeout=30) as c:
        assert len(c.predict("sq", jpeg)) == 1


def test_half_a_client_pair_is_refused_before_dialling(pki):
    with pytest.raises(ValueError, match="both a client certificate and its key"):
        Client("127.0.0.1:1", client_cert=str(pki["client_cert"]))
    code, _, err = run_cli("models", "--server", "127.0.0.1:1", "--tls-key", str(pki["client_key"]))
    assert code == 2 and "only the key" in err


def test_bad_tls_files_refuse_startup_naming_the_file(tmp_path, pki):
    missing = tmp_path / "nope.pem"
    cases = [
        (["--tls-cert", str(missing), "--tls-key", str(pki["key"])], f"--tls-cert {missing}: no such file"),
        (["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["client_key"])], "is not the private key of"),
        (["--tls-cert", str(pki["key"]), "--tls-key", str(pki["key"])], "no PEM CERTIFICATE"),
        (["--tls-cert", str(pki["cert"])], "needs both --tls-cert and --tls-key"),
    ]
    for flags, expected in cases:
        code, _, err = run_cli("serve", "--model", "sq=squeezenet1_1", "--store", str(tmp_path), *flags)
        assert code == 2, (flags, err)
        assert expected in err, (flags, err)
        assert "Traceback" not in err


# ---------------------------------------------------------------- tokens

def test_tokens_roles(token_server, jpeg):
    addr = port_of(token_server)
    for token in (None, "not-a-token-of-this-server"):
        with Client(addr, token=token, timeout=30) as c, pytest.raises(NetscopeError) as err:
            c.predict("sq", jpeg)
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer <token>" in err.value.message
        assert err.value.reason == ("TOKEN_MISSING" if token is None else "TOKEN_UNKNOWN")
    with Client(addr, token=READ_TOKEN, timeout=30) as c:
        assert len(c.predict("sq", jpeg)) == 1
        results = list(c.explain_many([jpeg, jpeg], model="sq", method="grad_cam"))  # the token rides on streams
        assert [r.error for r in results] == [None, None]
        with pytest.raises(NetscopeError) as err:
            c.load_model("sq2", "squeezenet1_1")
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "role admin" in err.value.message and "role is read" in err.value.message
        assert err.value.reason == "ROLE_TOO_LOW" and err.value.metadata["required_role"] == "admin"
        assert "sq2" not in {m.model for m in c.list_models()}
        with pytest.raises(NetscopeError) as err:
            c.unload_model("sq")
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    with Client(addr, token=ADMIN_TOKEN, timeout=60) as c:
        assert c.load_model("sq2", "squeezenet1_1").model == "sq2"
        c.unload_model("sq2")


def test_health_is_open_and_reflection_needs_a_token(token_server):
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    with Client(port_of(token_server), timeout=10) as c:
        assert c.health() == "SERVING"
        stub = reflection_pb2_grpc.ServerReflectionStub(c.channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with Client(port_of(token_server), token=READ_TOKEN, timeout=10) as c:
        stub = reflection_pb2_grpc.ServerReflectionStub(c.channel)
        names = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert names and names[0].list_services_response.service


def test_open_reflection_flag(tmp_path, tokens_file):
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    srv = Server(ServerConfig(address="127.0.0.1:0", store=str(tmp_path), auth_tokens=str(tokens_file),
                              open_reflection=True)).start()
    try:
        with Client(port_of(srv), timeout=10) as c:
            stub = reflection_pb2_grpc.ServerReflectionStub(c.channel)
            answers = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            assert "netscope.v1.Inspector" in {s.name for s in answers[0].list_services_response.service}
            with pytest.raises(NetscopeError) as err:  # the rest stays closed
                c.list_models()
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        srv.stop(0)


def test_cli_token_flags_and_env(token_server, tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    code, out, err = run_cli("models", "--server", port_of(token_server), "--token-file", str(token_file))
    assert code == 0, err
    assert "sq" in out
    code, _, err = run_cli("load", "--server", port_of(token_server), "--token", READ_TOKEN, "x", "squeezenet1_1")
    assert code == 1 and "PERMISSION_DENIED" in err
    code, _, err = run_cli("models", "--server", port_of(token_server))
    assert code == 1 and "UNAUTHENTICATED" in err
    monkeypatch.setenv("NETSCOPE_TOKEN", READ_TOKEN)
    code, _, err = run_cli("models", "--server", port_of(token_server))
    assert code == 0, err


def test_bench_and_jobs_carry_the_token(token_server, tmp_path, jpeg):
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(2):
        (folder / f"{n}.jpg").write_bytes(jpeg)
    addr = port_of(token_server)
    code, out, err = run_cli("bench", "--server", addr, "--token", READ_TOKEN, "--model", "sq", "--requests", "2",
                             "--warmup", "0", "--json")
    assert code == 0, err
    assert '"errors": {}' in out
    code, out, err = run_cli("explain", "--server", addr, "--token", READ_TOKEN, "--model", "sq", "--out",
                             str(tmp_path / "out"), "--json", str(folder))
    assert code == 0, err
    assert '"explained": 2' in out


def test_no_token_in_the_server_log(token_server, jpeg, caplog):
    caplog.set_level(logging.DEBUG)
    addr = port_of(token_server)
    wrong = "wrong-token-3b8e1f0d2c7a9456"
    with Client(addr, token=wrong, timeout=10) as c, pytest.raises(NetscopeError) as err:
        c.predict("sq", jpeg)
    assert wrong not in err.value.message
    with Client(addr, token=READ_TOKEN, timeout=10) as c:
        with pytest.raises(NetscopeError):
            c.load_model("y", "squeezenet1_1")
        with pytest.raises(NetscopeError):
            c.predict("no-such-model", jpeg)
    assert "refused" in caplog.text  # the refusals were logged ...
    for token in (wrong, READ_TOKEN, ADMIN_TOKEN):
        assert token not in caplog.text  # ... without their tokens


def test_tokens_compare_all_and_parse(tmp_path):
    tokens = read_tokens(_write(tmp_path, f"{READ_TOKEN} read\n{ADMIN_TOKEN} admin\n"))
    assert role_of(READ_TOKEN.encode(), tokens) == "read"
    assert role_of(ADMIN_TOKEN.encode(), tokens) == "admin"
    assert role_of(READ_TOKEN[:-1].encode(), tokens) is None


@pytest.mark.parametrize("text, expected", [
    (f"# ok\n{READ_TOKEN} read\n{ADMIN_TOKEN}\n", "line 3: expected `TOKEN ROLE`"),
    (f"{READ_TOKEN} read\n\n{ADMIN_TOKEN} root\n", "line 3: role must be read or admin"),
    ("short read\n", "line 1: the token is 5 characters"),
    (f"{READ_TOKEN} read\n{READ_TOKEN} admin\n", "line 2: this token is listed twice"),
    ("# nothing\n", "no tokens"),
])
def test_malformed_tokens_file_refuses_startup_naming_the_line(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected):
        Server(ServerConfig(address="127.0.0.1:0", store=str(tmp_path), auth_tokens=str(path)))
    code, _, err = run_cli("serve", "--model", "sq=squeezenet1_1", "--store", str(tmp_path), "--auth-tokens",
                           str(path))
    assert code == 2 and expected in err
    for token in (READ_TOKEN, ADMIN_TOKEN, "short"):
        assert token not in err


def _write(tmp_path, text: str):
    path = tmp_path / "tokens"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the plaintext guard

def test_public_address_in_the_clear_needs_insecure(tmp_path, tokens_file, caplog):
    with pytest.raises(ConfigError, match="without TLS or tokens.*--insecure"):
        Server(ServerConfig(address="0.0.0.0:0", store=str(tmp_path)))
    code, _, err = run_cli("serve", "--address", "0.0.0.0:0", "--model", "sq=squeezenet1_1", "--store", str(tmp_path))
    assert code == 2 and "refusing to serve 0.0.0.0:0" in err
    for address in ("127.0.0.1:0", "localhost:0", "[::1]:0"):
        Server(ServerConfig(address=address, store=str(tmp_path))).stop(0)
    caplog.set_level(logging.WARNING)
    srv = Server(ServerConfig(address="0.0.0.0:0", store=str(tmp_path), insecure=True)).start()
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=10) as c:
            assert c.health("") == "SERVING"
    finally:
        srv.stop(0)
    assert "--insecure" in caplog.text
    Server(ServerConfig(address="0.0.0.0:0", store=str(tmp_path), auth_tokens=str(tokens_file))).stop(0)


# ---------------------------------------------------------------- reflection v1

def test_reflection_v1_lists_the_services(server):
    """A client that speaks only grpc.reflection.v1 (the messages are v1alpha's on the wire)."""
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                     request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="netscope.v1.Inspector")]
        listed, v1_file, ours = list(call(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"netscope.v1.Inspector", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
            "grpc.reflection.v1.ServerReflection"} <= names
    assert v1_file.file_descriptor_response.file_descriptor_proto, v1_file.error_response
    assert ours.file_descriptor_response.file_descriptor_proto
