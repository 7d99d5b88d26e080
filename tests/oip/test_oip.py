"""The Open Inference Protocol (KServe v2) on a real server: NVIDIA's
tritonclient in its own virtualenv (a client nobody here wrote) for every
call, and our generated stubs for what tritonclient does not send (typed
contents). Numbers are compared with netscope.v1's Predict and Explain."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

from netscope.client import Client
from netscope.inference import grpc_service_pb2 as oip
from netscope.inference import grpc_service_pb2_grpc as oip_grpc
from netscope.server.app import ModelSpec, Server, ServerConfig
from netscope.training.train import main as train

from ..conftest import encode, photo

ROOT = Path(__file__).resolve().parents[2]
TRITON_PYTHON = ROOT / ".venv-triton" / "bin" / "python"
READ, ADMIN = "read-token-0123456789abcdef", "admin-token-0123456789abcdef"
# A small digits classifier (16x16, one channel), trained here in a second: a trained model, like the demo.
TINY = ["--data", "digits", "--image-size", "16", "--arch", "simple_cnn", "--arch-arg", "widths=[8,16]",
        "--limit", "160", "--batch-size", "32", "--epochs", "2", "--threads", "1", "--no-progress",
        "--no-tensorboard"]


@pytest.fixture(scope="module")
def oip_server(tmp_path_factory):
    store = tmp_path_factory.mktemp("oip_store")
    assert train([*TINY, "--out", str(store / "demo.pt")]) == 0
    tokens = store.parent / "oip_tokens.txt"
    tokens.write_text(f"{READ} read\n{ADMIN} admin\n")
    srv = Server(ServerConfig(address="127.0.0.1:0", models=[ModelSpec("demo", "demo")], store=str(store),
                              device="cpu", max_images=64, auth_tokens=str(tokens), grace_s=2)).start()
    yield srv
    srv.stop(grace=1)


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("oip_photo") / "coffee.jpg"
    path.write_bytes(encode(photo("coffee")))
    return path


@pytest.fixture(scope="module")
def triton(oip_server, jpeg):
    """What tritonclient got for every call (tests/oip/triton_calls.py)."""
    if not TRITON_PYTHON.exists():
        pytest.skip("no .venv-triton with tritonclient: run scripts/setup.sh test")
    proc = subprocess.run([str(TRITON_PYTHON), str(Path(__file__).with_name("triton_calls.py")), oip_server.address,
                           READ, ADMIN, str(jpeg)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def client(oip_server):
    with Client(oip_server.address, token=READ, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def stub(oip_server):
    channel = grpc.insecure_channel(oip_server.address)
    yield oip_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


TOKEN = (("authorization", f"Bearer {READ}"),)


def probabilities(answer, n=1):
    p = answer["probabilities"]
    assert p["datatype"] == "FP32" and p["shape"] == [n, 10]
    return np.asarray(p["data"], np.float32).reshape(n, 10)


def test_health_and_metadata(triton):
    assert triton["live_no_token"] is True and triton["ready_no_token"] is True
    meta = triton["server_metadata"]
    assert meta["name"] == "netscope" and {"classification", "model_repository", "statistics"} <= set(meta["extensions"])
    assert triton["model_ready"] is True and triton["model_ready_unknown"] is False
    model = triton["model_metadata"]
    assert model["name"] == "demo" and model["versions"] == ["1"]
    assert {(i["name"], i["datatype"]) for i in model["inputs"]} == {("images", "BYTES"), ("pixels", "UINT8"),
                                                                     ("tensor", "FP32")}
    assert {(o["name"], tuple(o["shape"])) for o in model["outputs"]} == {("logits", ("-1", "10")),
                                                                          ("probabilities", ("-1", "10"))}
    config = triton["model_config"]["config"]
    assert config["name"] == "demo" and config["max_batch_size"] == 64
    assert [m["name"] for m in triton["repository_index"]["models"]] == ["demo"]


def test_probabilities_equal_predicts(triton, client, jpeg):
    """The same JPEG: tritonclient's ModelInfer and netscope.v1 Predict agree to float32 rounding."""
    want = client.predict("demo", jpeg.read_bytes(), probabilities=True)[0]
    got = probabilities(triton["jpeg"])[0]
    np.testing.assert_allclose(got, want.probabilities, rtol=0, atol=1e-6)
    logits = np.asarray(triton["jpeg"]["logits"]["data"], np.float32)
    assert int(np.argmax(logits)) == want.top1.index
    np.testing.assert_allclose(logits[want.top1.index], want.top1.logit, atol=1e-5)
    batch = probabilities(triton["batch64"], 64)  # a 64-image request, every row the single image's
    np.testing.assert_allclose(batch, np.repeat(got[None], 64, axis=0), rtol=0, atol=1e-5)


def test_pixels_and_preprocessed_tensors_equal_predicts(triton, client):
    pixels = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)
    want = client.predict("demo", pixels, probabilities=True)[0].probabilities
    np.testing.assert_allclose(probabilities(triton["pixels"])[0], want, rtol=0, atol=1e-6)
    tensor = np.linspace(-1, 1, 2 * 256, dtype=np.float32).reshape(2, 1, 16, 16)
    want = [p.probabilities for p in client.predict("demo", list(tensor), probabilities=True)]
    assert set(triton["tensor"]) == {"probabilities"}  # only what was asked for
    np.testing.assert_allclose(probabilities(triton["tensor"], 2), np.stack(want), rtol=0, atol=1e-6)


def test_classification_extension_formats_as_triton(triton, client, jpeg):
    answer = triton["classification"]["probabilities"]
    assert answer["datatype"] == "BYTES" and answer["shape"] == [2, 3]
    top = client.predict("demo", jpeg.read_bytes(), k=3)[0].top_k
    assert answer["data"][:3] == [f"{s.probability:f}:{s.index}:{s.label}" for s in top]


def test_explanation_equals_explains_map(triton, client, jpeg):
    answer = triton["explain"]
    assert {"logits", "probabilities", "heatmap", "heatmap_upsampled", "heatmap_class"} <= set(answer)
    want = client.explain("demo", jpeg.read_bytes(), method="grad_cam", target=3)[0][0]
    assert answer["heatmap_class"]["data"] == [3]
    h, w = want.heatmap.shape
    assert answer["heatmap"]["shape"] == [1, 1, h, w]
    np.testing.assert_allclose(np.asarray(answer["heatmap"]["data"], np.float32).reshape(h, w), want.heatmap,
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(answer["heatmap_upsampled"]["data"], np.float32).reshape(
        want.heatmap_upsampled.shape), want.heatmap_upsampled, rtol=0, atol=1e-6)
    assert want.heatmap.std() > 0  # a map, not a constant


def test_statistics_count_the_inferences(triton):
    stats = triton["statistics"]["model_stats"][0]
    assert stats["name"] == "demo"
    # jpeg 1 + batch64 64 + pixels 1 + tensor 2 + classification 2 + explain 1 (Predicts in other tests may add)
    assert int(stats["inference_count"]) >= 71
    assert int(stats["inference_stats"]["success"]["count"]) >= 6 and int(stats["last_inference"]) > 0


@pytest.mark.parametrize("case, code, words", [
    ("unknown_model", "StatusCode.NOT_FOUND", "'nope' is not loaded"),
    ("wrong_datatype", "StatusCode.INVALID_ARGUMENT", "input 'images' is BYTES"),
    ("wrong_shape", "StatusCode.INVALID_ARGUMENT", "[N, H, W, 3]"),
    ("undecodable", "StatusCode.INVALID_ARGUMENT", "image 0"),
    ("too_many_images", "StatusCode.RESOURCE_EXHAUSTED", "65 images in one request is over the server's limit of 64"),
    ("unknown_output", "StatusCode.INVALID_ARGUMENT", "output 'scores'"),
    ("misspelt_parameter", "StatusCode.INVALID_ARGUMENT", "closest: explain"),
    ("unknown_method", "StatusCode.INVALID_ARGUMENT", "grad_kam"),
    ("infer_no_token", "StatusCode.UNAUTHENTICATED", ""),
    ("load_with_read_token", "StatusCode.PERMISSION_DENIED", ""),
    ("unload_with_read_token", "StatusCode.PERMISSION_DENIED", ""),
    ("load_unknown_source", "StatusCode.NOT_FOUND", "'nosuch'"),
])
def test_bad_input_gets_its_code_and_a_message(triton, case, code, words):
    answer = triton[case]
    assert answer["code"] == code, answer
    assert words in answer["details"], answer["details"]


def test_repository_load_and_unload_with_an_admin_token(triton):
    assert triton["load_with_admin_token"] is None and triton["ready_after_load"] is True
    assert "demo2" in [m["name"] for m in triton["index_after_load"]["models"]]
    assert triton["unload_with_admin_token"] is None and triton["ready_after_unload"] is False


# ------------------------------------------------------------ our own stubs: typed contents

def infer(stub, name, datatype, shape, **contents):
    request = oip.ModelInferRequest(model_name="demo", id="req-7")
    request.inputs.add(name=name, datatype=datatype, shape=shape, contents=oip.InferTensorContents(**contents))
    return stub.ModelInfer(request, metadata=TOKEN)


def test_typed_contents_answer_typed_outputs(stub, client, jpeg):
    response = infer(stub, "images", "BYTES", [1], bytes_contents=[jpeg.read_bytes()])
    assert response.id == "req-7" and not response.raw_output_contents
    out = {o.name: o for o in response.outputs}
    want = client.predict("demo", jpeg.read_bytes(), probabilities=True)[0].probabilities
    np.testing.assert_allclose(np.asarray(out["probabilities"].contents.fp32_contents), want, rtol=0, atol=1e-6)
    tensor = np.linspace(-1, 1, 256, dtype=np.float32)
    response = infer(stub, "tensor", "FP32", [1, 1, 16, 16], fp32_contents=tensor.tolist())
    want = client.predict("demo", tensor.reshape(1, 16, 16), probabilities=True)[0].probabilities
    np.testing.assert_allclose(np.asarray(response.outputs[1].contents.fp32_contents), want, rtol=0, atol=1e-6)
    response = infer(stub, "pixels", "UINT8", [1, 4, 4, 3], uint_contents=list(range(48)))
    assert len(response.outputs[0].contents.fp32_contents) == 10


@pytest.mark.parametrize("name, datatype, shape, contents, words", [
    ("pixels", "UINT8", [1, 4, 4, 3], {"uint_contents": [300] * 48}, "0..255"),
    ("tensor", "FP32", [1, 1, 16, 16], {"fp32_contents": [0.0] * 10}, "10 values"),
    ("images", "BYTES", [2], {"bytes_contents": [b"x"]}, "carries 1"),
    ("photo", "BYTES", [1], {"bytes_contents": [b"x"]}, "not one of this model's"),
    ("tensor", "FP32", [1, 16, 16], {"fp32_contents": [0.0] * 256}, "[N, C, H, W]"),
])
def test_typed_contents_that_disagree_are_invalid_argument(stub, name, datatype, shape, contents, words):
    with pytest.raises(grpc.RpcError) as err:
        infer(stub, name, datatype, shape, **contents)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details()


def test_heatmap_without_explain_says_how_to_ask(stub, jpeg):
    request = oip.ModelInferRequest(model_name="demo")
    request.inputs.add(name="images", datatype="BYTES", shape=[1],
                       contents=oip.InferTensorContents(bytes_contents=[jpeg.read_bytes()]))
    request.outputs.add(name="heatmap")
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, metadata=TOKEN)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "explain" in err.value.details()


def test_health_and_reflection_list_the_service(oip_server):
    """grpcurl-style tools find the service and its messages with no .proto of ours."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(oip_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert oip_grpc.GRPCInferenceServiceStub(channel).ServerReady(oip.ServerReadyRequest()).ready
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.ModelInferRequest")]
        listed, found = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter(requests), metadata=TOKEN, timeout=10)
    assert "inference.GRPCInferenceService" in {s.name for s in listed.list_services_response.service}
    assert found.file_descriptor_response.file_descriptor_proto, found.error_response


def test_bench_times_both_protocols_in_one_run(oip_server, jpeg):
    from netscope.cli import bench

    results = bench.run([oip_server.address], "demo", protocol="both", requests=6, warmup=1, inputs=[str(jpeg)],
                        connect={"token": READ})
    assert [r.target.endswith("(OIP ModelInfer)") for r in results] == [False, True]
    assert all(r.requests == 6 and not r.errors for r in results), [r.errors for r in results]
    assert results[0].server_ms and not results[1].server_ms  # the protocol carries no time split
