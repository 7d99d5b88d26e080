"""Open Inference Protocol tensors <-> what netscope's one inference path takes and gives.

In: one input per request, by name and datatype
  - `images`  BYTES  [N] (or [N, 1]): one encoded JPEG/PNG/WebP/BMP per element;
  - `pixels`  UINT8  [N, H, W, 3] RGB (or [N, H, W] grey): preprocessed like a decoded image;
  - `tensor`  FP32   [N, C, H, W]: already preprocessed, fed to the model as it is;
as typed `contents` or `raw_input_contents` (little-endian; BYTES elements each
a 4-byte little-endian length, then the bytes). They become netscope.v1 `Image`
messages, so the limits, decoding and checks are Predict's own.

Out: `logits`, `probabilities` FP32 [N, num_classes]; with the `explain`
parameter also `heatmap` FP32 [N, K, h, w] (the layer's resolution),
`heatmap_upsampled` FP32 [N, K, H, W] (the input's) and `heatmap_class` INT64
[N, K] (the class each map explains); K classes per image (1, or top_k). In
`raw_output_contents` when the request sent raw contents, else typed. An
output asked for with the `classification` parameter (Triton's extension)
becomes BYTES [N, count] of "value:index:label", highest value first.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from netscope.inference import grpc_service_pb2 as oip
from netscope.v1 import inspector_pb2 as pb

from ..errors import InvalidArgument, ResourceExhausted, closest, closest_metadata, shown

IMAGES, PIXELS, TENSOR = "images", "pixels", "tensor"
INPUTS = {IMAGES: "BYTES", PIXELS: "UINT8", TENSOR: "FP32"}
INPUT_SHAPES = {IMAGES: "[N] (one encoded image per element)", PIXELS: "[N, H, W, 3] RGB or [N, H, W] grey",
                TENSOR: "[N, C, H, W], preprocessed"}
LOGITS, PROBABILITIES = "logits", "probabilities"
HEATMAP, HEATMAP_UPSAMPLED, HEATMAP_CLASS = "heatmap", "heatmap_upsampled", "heatmap_class"
CLASS_OUTPUTS = (LOGITS, PROBABILITIES)
EXPLAIN_OUTPUTS = (HEATMAP, HEATMAP_UPSAMPLED, HEATMAP_CLASS)
MAX_DIMS = 8


@dataclass
class Requested:
    """An output to answer with: its name, and the classification count (0: the tensor itself)."""

    name: str
    classification: int = 0


# ------------------------------------------------------------ inputs

def images_of(request: oip.ModelInferRequest, max_images: int) -> list[pb.Image]:
    """The request's one input as netscope.v1 Image messages, one per image.
    InvalidArgument: not exactly one input, an unknown input name, a datatype
    or shape that is not the input's, contents that disagree with the shape;
    ResourceExhausted (TOO_MANY_IMAGES): more than max_images images. All
    checked before any image is decoded or copied."""
    if len(request.inputs) != 1:
        raise InvalidArgument(f"{len(request.inputs)} inputs; send exactly one: " + _inputs_text(), reason="INPUT_COUNT",
                              field="inputs")
    t = request.inputs[0]
    if t.name not in INPUTS:
        raise InvalidArgument(f"input {shown(t.name)} is not one of this model's{closest(t.name, INPUTS)}; send one of "
                              + _inputs_text(), reason="INPUT_NOT_FOUND", field="inputs[0].name",
                              metadata=closest_metadata(t.name, INPUTS))
    expected = INPUTS[t.name]
    if t.datatype != expected:
        raise InvalidArgument(f"input {t.name!r} is {expected} {INPUT_SHAPES[t.name]}; got datatype "
                              f"{shown(t.datatype)}" + _other_input_hint(t.datatype), reason="DATATYPE_MISMATCH",
                              field="inputs[0].datatype")
    shape = [int(s) for s in t.shape]
    _check_shape(t.name, shape)
    n = shape[0]
    if n > max_images:
        raise ResourceExhausted(f"{n} images in one request is over the server's limit of {max_images}; split them "
                                f"into requests of at most {max_images}", reason="TOO_MANY_IMAGES",
                                field="inputs[0].shape", metadata={"limit": str(max_images)})
    raw = request.raw_input_contents
    if raw and len(raw) != 1:
        raise InvalidArgument(f"{len(raw)} raw_input_contents for 1 input; send one per input", field="raw_input_contents")
    if t.name == IMAGES:
        return [pb.Image(encoded=e) for e in _encoded(t, shape, raw[0] if raw else None)]
    count = math.prod(shape)
    if t.name == PIXELS:
        data = _fixed(t, count, 1, raw[0] if raw else None, _typed_uint8)
        dtype = pb.UINT8
    else:
        data = _fixed(t, count, 4, raw[0] if raw else None, _typed_fp32)
        dtype = pb.FLOAT32
    per = len(data) // n
    return [pb.Image(tensor=pb.Tensor(dtype=dtype, shape=shape[1:], data=data[i * per:(i + 1) * per]))
            for i in range(n)]


def _inputs_text() -> str:
    return ", ".join(f"{name} ({dt} {INPUT_SHAPES[name]})" for name, dt in INPUTS.items())


def _other_input_hint(datatype: str) -> str:
    other = next((name for name, dt in INPUTS.items() if dt == datatype), None)
    return f" (for {datatype}, name the input {other!r})" if other else ""


def _check_shape(name: str, shape: list[int]) -> None:
    ranks = {IMAGES: (1, 2), PIXELS: (3, 4), TENSOR: (4,)}[name]
    field = "inputs[0].shape"
    if len(shape) not in ranks or len(shape) > MAX_DIMS:
        raise InvalidArgument(f"input {name!r} has shape {_shape_text(shape)}; it takes {INPUT_SHAPES[name]}",
                              reason="SHAPE_MISMATCH", field=field)
    if any(s < 1 for s in shape):
        raise InvalidArgument(f"input {name!r} has shape {_shape_text(shape)}: every dimension must be at least 1",
                              reason="SHAPE_MISMATCH", field=field)
    if name == IMAGES and len(shape) == 2 and shape[1] != 1:
        raise InvalidArgument(f"input 'images' has shape {_shape_text(shape)}; one encoded image per element: [N] or "
                              "[N, 1]", reason="SHAPE_MISMATCH", field=field)
    if name == PIXELS and len(shape) == 4 and shape[3] != 3:
        raise InvalidArgument(f"input 'pixels' has shape {_shape_text(shape)}; RGB pixels are [N, H, W, 3] (grey: "
                              "[N, H, W])", reason="SHAPE_MISMATCH", field=field)


def _shape_text(shape) -> str:
    text = str(list(shape))
    return text if len(text) <= 80 else text[:80] + "...]"


def _encoded(t, shape: list[int], raw: bytes | None) -> list[bytes]:
    n = math.prod(shape)
    if raw is None:
        elements = list(t.contents.bytes_contents)
    else:
        elements = deserialize_bytes(raw, n)
    if len(elements) != n:
        raise InvalidArgument(f"input 'images' has shape {_shape_text(shape)} ({n} elements) but carries "
                              f"{len(elements)}; send one encoded image per element", reason="CONTENTS_MISMATCH",
                              field="inputs[0].contents")
    return elements


def deserialize_bytes(raw: bytes, limit: int) -> list[bytes]:
    """BYTES raw contents: each element a 4-byte little-endian length, then its
    bytes. InvalidArgument when a length runs past the end, or there are
    more than `limit` elements."""
    out, at = [], 0
    while at < len(raw):
        if len(out) >= limit or at + 4 > len(raw):
            raise InvalidArgument(f"raw BYTES contents hold more than the shape's {limit} elements, or a cut "
                                  "length prefix; each element is a 4-byte little-endian length and its bytes",
                                  reason="CONTENTS_MISMATCH", field="raw_input_contents[0]")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise InvalidArgument(f"raw BYTES element {len(out)} claims {size} bytes, past the end of the contents",
                                  reason="CONTENTS_MISMATCH", field="raw_input_contents[0]")
        out.append(raw[at:at + size])
        at += size
    return out


def _fixed(t, count: int, itemsize: int, raw: bytes | None, typed) -> bytes:
    """A fixed-size datatype's little-endian bytes, from raw or typed contents, checked against the shape."""
    if raw is not None:
        if len(raw) != count * itemsize:
            raise InvalidArgument(f"input {t.name!r}: {len(raw)} bytes of raw contents do not match shape "
                                  f"{_shape_text(t.shape)} of {t.datatype} ({count * itemsize} bytes)",
                                  reason="CONTENTS_MISMATCH", field="raw_input_contents[0]",
                                  metadata={"bytes": str(len(raw)), "expected_bytes": str(count * itemsize)})
        return raw
    return typed(t, count)


def _typed_uint8(t, count: int) -> bytes:
    values = t.contents.uint_contents
    _check_count(t, len(values), count, "uint_contents")
    arr = np.asarray(values, dtype=np.uint32)
    if arr.size and int(arr.max()) > 255:
        raise InvalidArgument(f"input {t.name!r}: UINT8 pixels are 0..255; got {int(arr.max())}",
                              reason="VALUE_OUT_OF_RANGE", field="inputs[0].contents.uint_contents")
    return arr.astype(np.uint8).tobytes()


def _typed_fp32(t, count: int) -> bytes:
    values = t.contents.fp32_contents
    _check_count(t, len(values), count, "fp32_contents")
    return np.asarray(values, dtype="<f4").tobytes()


def _check_count(t, got: int, count: int, field: str) -> None:
    if got != count:
        raise InvalidArgument(f"input {t.name!r}: {got} values in contents.{field} do not match shape "
                              f"{_shape_text(t.shape)} ({count} values); send them as contents.{field} or as "
                              "raw_input_contents", reason="CONTENTS_MISMATCH", field=f"inputs[0].contents.{field}")


# ------------------------------------------------------------ outputs

def requested_outputs(request: oip.ModelInferRequest, num_classes: int, explaining: bool) -> list[Requested]:
    """The outputs to answer with (none asked: every one there is), each checked:
    a known name, heatmaps only with `explain`, a classification count of
    1..num_classes on logits or probabilities only."""
    names = CLASS_OUTPUTS + (EXPLAIN_OUTPUTS if explaining else ())
    if not request.outputs:
        return [Requested(n) for n in names]
    out, seen = [], set()
    for i, o in enumerate(request.outputs):
        field = f"outputs[{i}]"
        if o.name in EXPLAIN_OUTPUTS and not explaining:
            raise InvalidArgument(f"output {o.name!r} is an explanation's: add the parameter explain (a method, e.g. "
                                  "grad_cam) to ask for one", reason="OUTPUT_NEEDS_EXPLAIN", field=field + ".name")
        if o.name not in names:
            raise InvalidArgument(f"output {shown(o.name)} is not one of this model's{closest(o.name, names)}; "
                                  f"outputs: {', '.join(names)}", reason="OUTPUT_NOT_FOUND", field=field + ".name",
                                  metadata=closest_metadata(o.name, names))
        if o.name in seen:
            raise InvalidArgument(f"output {o.name!r} is asked for twice", field=field + ".name")
        seen.add(o.name)
        count = 0
        for key, p in o.parameters.items():
            if key == "binary_data":
                continue
            if key != "classification":
                raise InvalidArgument(f"output parameter {shown(key)} is not one netscope reads; outputs take "
                                      "classification (Triton's extension: the top-n classes)",
                                      reason="PARAMETER_UNKNOWN", field=f"{field}.parameters")
            kind = p.WhichOneof("parameter_choice")
            if kind not in ("int64_param", "uint64_param"):
                raise InvalidArgument("output parameter classification is the number of classes (an integer)",
                                      field=f"{field}.parameters[classification]")
            count = int(getattr(p, kind))
            if o.name not in CLASS_OUTPUTS:
                raise InvalidArgument(f"classification applies to logits or probabilities, not {o.name!r}",
                                      field=f"{field}.parameters[classification]")
            if not 1 <= count <= num_classes:
                raise InvalidArgument(f"classification count must be between 1 and {num_classes} (the model's class "
                                      f"count); got {count}", reason="VALUE_OUT_OF_RANGE",
                                      field=f"{field}.parameters[classification]")
        out.append(Requested(o.name, count))
    return out


def output_array(name: str, logits, probabilities, result) -> np.ndarray:
    """The named output as a numpy array (see the module's docstring for shapes)."""
    if name == LOGITS:
        return logits.numpy()
    if name == PROBABILITIES:
        return probabilities
    if name == HEATMAP_CLASS:
        return np.asarray([[cm.target for cm in image] for image in result.images], dtype=np.int64)
    attr = "heatmap" if name == HEATMAP else "upsampled"
    return np.stack([np.stack([getattr(cm, attr).numpy() for cm in image]) for image in result.images]).astype(
        np.float32, copy=False)


def add_output(out: oip.ModelInferResponse, o: Requested, array: np.ndarray, class_names: list[str],
               raw: bool) -> None:
    """Append the output (and its raw contents when `raw`) to the response."""
    if o.classification:
        array = classification(array, o.classification, class_names)
    datatype = {"float32": "FP32", "int64": "INT64", "object": "BYTES"}[array.dtype.name]
    tensor = out.outputs.add(name=o.name, datatype=datatype, shape=list(array.shape))
    if datatype == "BYTES":
        elements = [e for e in array.ravel()]
        if raw:
            out.raw_output_contents.append(b"".join(struct.pack("<I", len(e)) + e for e in elements))
        else:
            tensor.contents.bytes_contents.extend(elements)
    elif raw:
        out.raw_output_contents.append(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    else:
        tensor.contents.int64_contents.extend(array.ravel().tolist())


def classification(values: np.ndarray, count: int, class_names: list[str]) -> np.ndarray:
    """Triton's classification extension: per row the `count` highest values
    as b"value:index:label" (value as C's %f, ties in index order), an
    object array of shape (N, count)."""
    order = np.argsort(-values, axis=1, kind="stable")[:, :count]
    rows = [[f"{float(values[r, i]):f}:{int(i)}:{class_names[i]}".encode() for i in order[r]]
            for r in range(values.shape[0])]
    out = np.empty((values.shape[0], count), dtype=object)
    for r, row in enumerate(rows):
        out[r, :] = row
    return out
