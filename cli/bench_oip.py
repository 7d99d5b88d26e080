"""`netscope bench --protocol oip`: the Predict benchmark's request as an
Open Inference Protocol ModelInfer, sent the way tritonclient sends it (raw
contents), so both protocols are timed on the same server, model and images."""
from __future__ import annotations

import itertools
import struct

import grpc

from netscope.client.client import Client, NetscopeError
from netscope.inference import grpc_service_pb2 as oip
from netscope.inference import grpc_service_pb2_grpc as oip_grpc
from netscope.v1 import inspector_pb2 as pb

TOP_K = 5  # as the Predict benchmark's top_k


def infer_request(model: str, images: list[pb.Image]) -> oip.ModelInferRequest:
    """One ModelInfer for `images`: encoded images as BYTES `images`, uint8
    pixels as `pixels`, float tensors as `tensor`; the answer asked is the
    top-5 (Triton's classification on `probabilities`), as Predict's top_k=5.
    ValueError when the images mix kinds or shapes (one input per request)."""
    request = oip.ModelInferRequest(model_name=model)
    kinds = {im.WhichOneof("source") for im in images}
    if kinds == {"encoded"}:
        request.inputs.add(name="images", datatype="BYTES", shape=[len(images)])
        request.raw_input_contents.append(b"".join(struct.pack("<I", len(im.encoded)) + im.encoded for im in images))
    elif kinds == {"tensor"} and len({(im.tensor.dtype, tuple(im.tensor.shape)) for im in images}) == 1:
        t = images[0].tensor
        name, datatype = ("pixels", "UINT8") if t.dtype == pb.UINT8 else ("tensor", "FP32")
        if t.dtype not in (pb.UINT8, pb.FLOAT32):
            raise ValueError("--protocol oip sends uint8 pixels or float32 tensors; convert the inputs")
        request.inputs.add(name=name, datatype=datatype, shape=[len(images), *t.shape])
        request.raw_input_contents.append(b"".join(im.tensor.data for im in images))
    else:
        raise ValueError("--protocol oip sends one input per request: all encoded files, or tensors of one shape")
    out = request.outputs.add(name="probabilities")
    out.parameters["classification"].int64_param = TOP_K
    return request


def oip_caller(clients: list[Client], model: str, images: list[pb.Image]):
    """A ModelInfer call rotating over the servers (each client's channel, so
    its TLS and token); raises NetscopeError on a status, returns no Timing
    (the protocol has none)."""
    stubs = itertools.cycle([oip_grpc.GRPCInferenceServiceStub(c.channel) for c in clients])
    request = infer_request(model, images)

    def call():
        try:
            next(stubs).ModelInfer(request, timeout=300)
        except grpc.RpcError as exc:
            raise NetscopeError(exc.code(), exc.details() or "") from None
        return None

    return call
