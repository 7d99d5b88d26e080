"""Every Open Inference Protocol call a Triton user makes, through NVIDIA's
tritonclient (a client nobody here wrote), against a running netscope server.

Run with .venv-triton/bin/python (tritonclient pins a protobuf netscope does
not use): `triton_calls.py ADDRESS READ_TOKEN ADMIN_TOKEN JPEG_FILE`. Prints
one JSON object: each call's answer, or {"code", "details"} for an error.
Imports nothing of netscope.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main(address: str, read_token: str, admin_token: str, jpeg_path: str) -> dict:
    client = grpcclient.InferenceServerClient(address)
    read = {"authorization": f"Bearer {read_token}"}
    admin = {"authorization": f"Bearer {admin_token}"}
    jpeg = open(jpeg_path, "rb").read()
    out: dict = {}

    def call(name, fn, *args, **kwargs):
        try:
            out[name] = fn(*args, **kwargs)
        except InferenceServerException as exc:
            out[name] = {"code": exc.status(), "details": exc.message()}

    def infer(name, inputs, outputs=None, headers=read, model="demo", **kwargs):
        def run():
            result = client.infer(model, inputs, outputs=outputs, headers=headers, **kwargs)
            response = result.get_response()
            return {o.name: {"datatype": o.datatype, "shape": list(o.shape),
                             "data": _jsonable(result.as_numpy(o.name))} for o in response.outputs}
        call(name, run)

    def images(n, data=jpeg):
        t = grpcclient.InferInput("images", [n], "BYTES")
        t.set_data_from_numpy(np.array([data] * n, dtype=np.object_))
        return [t]

    # Health and metadata; probes carry no token.
    call("live_no_token", client.is_server_live)
    call("ready_no_token", client.is_server_ready)
    call("server_metadata", lambda: client.get_server_metadata(headers=read, as_json=True))
    call("model_ready", lambda: client.is_model_ready("demo", headers=read))
    call("model_ready_unknown", lambda: client.is_model_ready("nope", headers=read))
    call("model_metadata", lambda: client.get_model_metadata("demo", headers=read, as_json=True))
    call("model_config", lambda: client.get_model_config("demo", headers=read, as_json=True))
    call("repository_index", lambda: client.get_model_repository_index(headers=read, as_json=True))

    # Inference: encoded, pixels, preprocessed; a 64-image request; Triton's classification.
    infer("jpeg", images(1))
    infer("batch64", images(64))
    pixels = grpcclient.InferInput("pixels", [1, 40, 30, 3], "UINT8")
    pixels.set_data_from_numpy(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(1, 40, 30, 3))
    infer("pixels", [pixels])
    tensor = grpcclient.InferInput("tensor", [2, 1, 16, 16], "FP32")
    tensor.set_data_from_numpy(np.linspace(-1, 1, 2 * 256, dtype=np.float32).reshape(2, 1, 16, 16))
    infer("tensor", [tensor], outputs=[grpcclient.InferRequestedOutput("probabilities")])
    infer("classification", images(2), outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)])
    # netscope's extension: an explanation through the same door.
    infer("explain", images(1), parameters={"explain": "grad_cam", "target": 3})
    call("statistics", lambda: client.get_inference_statistics("demo", headers=read, as_json=True))

    # Bad input: each gets its own code and a message that says what to change.
    infer("unknown_model", images(1), model="nope")
    wrong_type = grpcclient.InferInput("images", [1, 4], "FP32")
    wrong_type.set_data_from_numpy(np.zeros((1, 4), np.float32))
    infer("wrong_datatype", [wrong_type])
    wrong_shape = grpcclient.InferInput("pixels", [1, 8, 8, 4], "UINT8")
    wrong_shape.set_data_from_numpy(np.zeros((1, 8, 8, 4), np.uint8))
    infer("wrong_shape", [wrong_shape])
    infer("undecodable", images(1, b"this is not an image at all"))
    infer("too_many_images", images(65))
    infer("unknown_output", images(1), outputs=[grpcclient.InferRequestedOutput("scores")])
    infer("misspelt_parameter", images(1), parameters={"explian": "grad_cam"})
    infer("unknown_method", images(1), parameters={"explain": "grad_kam"})

    # Tokens: none, read, admin.
    infer("infer_no_token", images(1), headers=None)
    call("load_with_read_token", lambda: client.load_model("demo2", headers=read, config='{"source": "demo"}'))
    call("load_with_admin_token", lambda: client.load_model("demo2", headers=admin, config='{"source": "demo"}'))
    call("ready_after_load", lambda: client.is_model_ready("demo2", headers=read))
    call("index_after_load", lambda: client.get_model_repository_index(headers=read, as_json=True))
    call("unload_with_read_token", lambda: client.unload_model("demo2", headers=read))
    call("unload_with_admin_token", lambda: client.unload_model("demo2", headers=admin))
    call("ready_after_unload", lambda: client.is_model_ready("demo2", headers=read))
    call("load_unknown_source", lambda: client.load_model("nosuch", headers=admin))
    client.close()
    return out


def _jsonable(array):
    if array is None:
        return None
    if array.dtype == np.object_:
        return [x.decode() if isinstance(x, bytes) else x for x in array.ravel().tolist()]
    return array.ravel().tolist()


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
