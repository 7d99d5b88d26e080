from google.rpc import status_pb2 as _status_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
    FLOAT16: _ClassVar[DType]
    BFLOAT16: _ClassVar[DType]
    FLOAT64: _ClassVar[DType]
    UINT8: _ClassVar[DType]
    INT8: _ClassVar[DType]
    INT16: _ClassVar[DType]
    INT32: _ClassVar[DType]
    INT64: _ClassVar[DType]
    BOOL: _ClassVar[DType]

class KernelMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KERNEL_MODE_AUTO: _ClassVar[KernelMode]
    KERNEL_MODE_RGB: _ClassVar[KernelMode]
    KERNEL_MODE_PER_CHANNEL: _ClassVar[KernelMode]
    KERNEL_MODE_MEAN_INPUT: _ClassVar[KernelMode]
DTYPE_UNSPECIFIED: DType
FLOAT32: DType
FLOAT16: DType
BFLOAT16: DType
FLOAT64: DType
UINT8: DType
INT8: DType
INT16: DType
INT32: DType
INT64: DType
BOOL: DType
KERNEL_MODE_AUTO: KernelMode
KERNEL_MODE_RGB: KernelMode
KERNEL_MODE_PER_CHANNEL: KernelMode
KERNEL_MODE_MEAN_INPUT: KernelMode

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "tensor")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    tensor: Tensor
    def __init__(self, encoded: _Optional[bytes] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("index", "label", "top_k")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    index: int
    label: str
    top_k: int
    def __init__(self, index: _Optional[int] = ..., label: _Optional[str] = ..., top_k: _Optional[int] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_ms", "preprocess_ms", "compute_ms", "postprocess_ms", "device_batch_size")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    preprocess_ms: float
    compute_ms: float
    postprocess_ms: float
    device_batch_size: int
    def __init__(self, queue_ms: _Optional[float] = ..., preprocess_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ..., device_batch_size: _Optional[int] = ...) -> None: ...

class RenderOptions(_message.Message):
    __slots__ = ("colormap", "alpha", "sign", "clip_percentile")
    COLORMAP_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    SIGN_FIELD_NUMBER: _ClassVar[int]
    CLIP_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    colormap: str
    alpha: float
    sign: str
    clip_percentile: float
    def __init__(self, colormap: _Optional[str] = ..., alpha: _Optional[float] = ..., sign: _Optional[str] = ..., clip_percentile: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "checkpoints", "architectures")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURES_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelBrief]
    checkpoints: _containers.RepeatedScalarFieldContainer[str]
    architectures: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelBrief, _Mapping]]] = ..., checkpoints: _Optional[_Iterable[str]] = ..., architectures: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelBrief(_message.Message):
    __slots__ = ("model", "arch", "source", "device", "dtype", "num_classes", "pretrained")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    model: str
    arch: str
    source: str
    device: str
    dtype: str
    num_classes: int
    pretrained: bool
    def __init__(self, model: _Optional[str] = ..., arch: _Optional[str] = ..., source: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., num_classes: _Optional[int] = ..., pretrained: _Optional[bool] = ...) -> None: ...

class BatchingOptions(_message.Message):
    __slots__ = ("max_batch_size", "max_delay_ms", "max_queue")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_delay_ms: float
    max_queue: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_delay_ms: _Optional[float] = ..., max_queue: _Optional[int] = ...) -> None: ...

class ModelOptions(_message.Message):
    __slots__ = ("device", "dtype", "batching", "channels_last", "compile", "compile_batch_sizes", "device_decode", "pin_memory", "backend")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_LAST_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    COMPILE_BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_DECODE_FIELD_NUMBER: _ClassVar[int]
    PIN_MEMORY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    device: str
    dtype: str
    batching: BatchingOptions
    channels_last: bool
    compile: str
    compile_batch_sizes: _containers.RepeatedScalarFieldContainer[int]
    device_decode: bool
    pin_memory: bool
    backend: str
    def __init__(self, device: _Optional[str] = ..., dtype: _Optional[str] = ..., batching: _Optional[_Union[BatchingOptions, _Mapping]] = ..., channels_last: _Optional[bool] = ..., compile: _Optional[str] = ..., compile_batch_sizes: _Optional[_Iterable[int]] = ..., device_decode: _Optional[bool] = ..., pin_memory: _Optional[bool] = ..., backend: _Optional[str] = ...) -> None: ...

class BackendInfo(_message.Message):
    __slots__ = ("name", "providers", "exporter", "export_ms", "parity_max_abs_diff", "parity_tolerance", "session_dtype", "intra_op_threads")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    EXPORTER_FIELD_NUMBER: _ClassVar[int]
    EXPORT_MS_FIELD_NUMBER: _ClassVar[int]
    PARITY_MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    PARITY_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    SESSION_DTYPE_FIELD_NUMBER: _ClassVar[int]
    INTRA_OP_THREADS_FIELD_NUMBER: _ClassVar[int]
    name: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    exporter: str
    export_ms: float
    parity_max_abs_diff: float
    parity_tolerance: float
    session_dtype: str
    intra_op_threads: int
    def __init__(self, name: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., exporter: _Optional[str] = ..., export_ms: _Optional[float] = ..., parity_max_abs_diff: _Optional[float] = ..., parity_tolerance: _Optional[float] = ..., session_dtype: _Optional[str] = ..., intra_op_threads: _Optional[int] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model", "source", "weights", "arch", "num_classes", "options", "device", "dtype", "batching", "channels_last", "compile", "compile_batch_sizes", "device_decode", "pin_memory")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_LAST_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    COMPILE_BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_DECODE_FIELD_NUMBER: _ClassVar[int]
    PIN_MEMORY_FIELD_NUMBER: _ClassVar[int]
    model: str
    source: str
    weights: str
    arch: str
    num_classes: int
    options: ModelOptions
    device: str
    dtype: str
    batching: BatchingOptions
    channels_last: bool
    compile: str
    compile_batch_sizes: _containers.RepeatedScalarFieldContainer[int]
    device_decode: bool
    pin_memory: bool
    def __init__(self, model: _Optional[str] = ..., source: _Optional[str] = ..., weights: _Optional[str] = ..., arch: _Optional[str] = ..., num_classes: _Optional[int] = ..., options: _Optional[_Union[ModelOptions, _Mapping]] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., batching: _Optional[_Union[BatchingOptions, _Mapping]] = ..., channels_last: _Optional[bool] = ..., compile: _Optional[str] = ..., compile_batch_sizes: _Optional[_Iterable[int]] = ..., device_decode: _Optional[bool] = ..., pin_memory: _Optional[bool] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ModelInfo
    def __init__(self, info: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model", "input_size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_size: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., input_size: _Optional[_Iterable[int]] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("resize", "crop_size", "mean", "std", "interpolation", "channels")
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    resize: int
    crop_size: _containers.RepeatedScalarFieldContainer[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    interpolation: str
    channels: int
    def __init__(self, resize: _Optional[int] = ..., crop_size: _Optional[_Iterable[int]] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., interpolation: _Optional[str] = ..., channels: _Optional[int] = ...) -> None: ...

class LayerInfo(_message.Message):
    __slots__ = ("name", "type", "input_shape", "output_shape", "num_parameters", "trainable_parameters", "mult_adds", "cam_target", "depth", "is_leaf", "conv")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MULT_ADDS_FIELD_NUMBER: _ClassVar[int]
    CAM_TARGET_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    IS_LEAF_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    num_parameters: int
    trainable_parameters: int
    mult_adds: int
    cam_target: bool
    depth: int
    is_leaf: bool
    conv: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., output_shape: _Optional[_Iterable[int]] = ..., num_parameters: _Optional[int] = ..., trainable_parameters: _Optional[int] = ..., mult_adds: _Optional[int] = ..., cam_target: _Optional[bool] = ..., depth: _Optional[int] = ..., is_leaf: _Optional[bool] = ..., conv: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "arch", "source", "weights", "device", "dtype", "input_size", "preprocessing", "class_names", "num_parameters", "trainable_parameters", "flops", "layers", "pretrained", "note", "default_cam_layer", "mult_adds", "parameter_bytes", "batching", "channels_last", "compile", "compile_batch_sizes", "device_decode", "pin_memory", "min_input_size", "options", "backend")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CAM_LAYER_FIELD_NUMBER: _ClassVar[int]
    MULT_ADDS_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_LAST_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    COMPILE_BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_DECODE_FIELD_NUMBER: _ClassVar[int]
    PIN_MEMORY_FIELD_NUMBER: _ClassVar[int]
    MIN_INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    model: str
    arch: str
    source: str
    weights: str
    device: str
    dtype: str
    input_size: _containers.RepeatedScalarFieldContainer[int]
    preprocessing: Preprocessing
    class_names: _containers.RepeatedScalarFieldContainer[str]
    num_parameters: int
    trainable_parameters: int
    flops: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerInfo]
    pretrained: bool
    note: str
    default_cam_layer: str
    mult_adds: int
    parameter_bytes: int
    batching: BatchingOptions
    channels_last: bool
    compile: str
    compile_batch_sizes: _containers.RepeatedScalarFieldContainer[int]
    device_decode: bool
    pin_memory: bool
    min_input_size: int
    options: ModelOptions
    backend: BackendInfo
    def __init__(self, model: _Optional[str] = ..., arch: _Optional[str] = ..., source: _Optional[str] = ..., weights: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., input_size: _Optional[_Iterable[int]] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ..., class_names: _Optional[_Iterable[str]] = ..., num_parameters: _Optional[int] = ..., trainable_parameters: _Optional[int] = ..., flops: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerInfo, _Mapping]]] = ..., pretrained: _Optional[bool] = ..., note: _Optional[str] = ..., default_cam_layer: _Optional[str] = ..., mult_adds: _Optional[int] = ..., parameter_bytes: _Optional[int] = ..., batching: _Optional[_Union[BatchingOptions, _Mapping]] = ..., channels_last: _Optional[bool] = ..., compile: _Optional[str] = ..., compile_batch_sizes: _Optional[_Iterable[int]] = ..., device_decode: _Optional[bool] = ..., pin_memory: _Optional[bool] = ..., min_input_size: _Optional[int] = ..., options: _Optional[_Union[ModelOptions, _Mapping]] = ..., backend: _Optional[_Union[BackendInfo, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "images", "top_k", "return_probabilities")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[Image]
    top_k: int
    return_probabilities: bool
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., top_k: _Optional[int] = ..., return_probabilities: _Optional[bool] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("index", "label", "probability", "logit")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    index: int
    label: str
    probability: float
    logit: float
    def __init__(self, index: _Optional[int] = ..., label: _Optional[str] = ..., probability: _Optional[float] = ..., logit: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("top_k", "probabilities")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    top_k: _containers.RepeatedCompositeFieldContainer[ClassScore]
    probabilities: Tensor
    def __init__(self, top_k: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., probabilities: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions", "timing")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    timing: Timing
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class GridOptions(_message.Message):
    __slots__ = ("render", "colormap", "upsample_to_input", "max_tiles", "nrow", "padding", "tile_size")
    RENDER_FIELD_NUMBER: _ClassVar[int]
    COLORMAP_FIELD_NUMBER: _ClassVar[int]
    UPSAMPLE_TO_INPUT_FIELD_NUMBER: _ClassVar[int]
    MAX_TILES_FIELD_NUMBER: _ClassVar[int]
    NROW_FIELD_NUMBER: _ClassVar[int]
    PADDING_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    render: bool
    colormap: str
    upsample_to_input: bool
    max_tiles: int
    nrow: int
    padding: int
    tile_size: int
    def __init__(self, render: _Optional[bool] = ..., colormap: _Optional[str] = ..., upsample_to_input: _Optional[bool] = ..., max_tiles: _Optional[int] = ..., nrow: _Optional[int] = ..., padding: _Optional[int] = ..., tile_size: _Optional[int] = ...) -> None: ...

class FeatureMapsRequest(_message.Message):
    __slots__ = ("model", "images", "layers", "channels", "top_channels", "omit_tensor", "grid")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    TOP_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    OMIT_TENSOR_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[Image]
    layers: _containers.RepeatedScalarFieldContainer[str]
    channels: _containers.RepeatedScalarFieldContainer[int]
    top_channels: int
    omit_tensor: bool
    grid: GridOptions
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., layers: _Optional[_Iterable[str]] = ..., channels: _Optional[_Iterable[int]] = ..., top_channels: _Optional[int] = ..., omit_tensor: _Optional[bool] = ..., grid: _Optional[_Union[GridOptions, _Mapping]] = ...) -> None: ...

class LayerActivation(_message.Message):
    __slots__ = ("layer", "shape", "channels", "activation", "channel_mean", "channel_max", "grid_png", "channel_axis")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MEAN_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MAX_FIELD_NUMBER: _ClassVar[int]
    GRID_PNG_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_AXIS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    channels: _containers.RepeatedScalarFieldContainer[int]
    activation: Tensor
    channel_mean: _containers.RepeatedScalarFieldContainer[float]
    channel_max: _containers.RepeatedScalarFieldContainer[float]
    grid_png: bytes
    channel_axis: int
    def __init__(self, layer: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., channels: _Optional[_Iterable[int]] = ..., activation: _Optional[_Union[Tensor, _Mapping]] = ..., channel_mean: _Optional[_Iterable[float]] = ..., channel_max: _Optional[_Iterable[float]] = ..., grid_png: _Optional[bytes] = ..., channel_axis: _Optional[int] = ...) -> None: ...

class ImageFeatures(_message.Message):
    __slots__ = ("layers",)
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerActivation]
    def __init__(self, layers: _Optional[_Iterable[_Union[LayerActivation, _Mapping]]] = ...) -> None: ...

class FeatureMapsResponse(_message.Message):
    __slots__ = ("images", "timing")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageFeatures]
    timing: Timing
    def __init__(self, images: _Optional[_Iterable[_Union[ImageFeatures, _Mapping]]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class KernelsRequest(_message.Message):
    __slots__ = ("model", "layer", "mode", "grid", "omit_tensor")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    OMIT_TENSOR_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    mode: KernelMode
    grid: GridOptions
    omit_tensor: bool
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., mode: _Optional[_Union[KernelMode, str]] = ..., grid: _Optional[_Union[GridOptions, _Mapping]] = ..., omit_tensor: _Optional[bool] = ...) -> None: ...

class KernelsResponse(_message.Message):
    __slots__ = ("layer", "weight", "grid_png", "mode", "tiles", "total_tiles")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    GRID_PNG_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TILES_FIELD_NUMBER: _ClassVar[int]
    layer: str
    weight: Tensor
    grid_png: bytes
    mode: KernelMode
    tiles: int
    total_tiles: int
    def __init__(self, layer: _Optional[str] = ..., weight: _Optional[_Union[Tensor, _Mapping]] = ..., grid_png: _Optional[bytes] = ..., mode: _Optional[_Union[KernelMode, str]] = ..., tiles: _Optional[int] = ..., total_tiles: _Optional[int] = ...) -> None: ...

class Histogram(_message.Message):
    __slots__ = ("edges", "counts")
    EDGES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    edges: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, edges: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("mean", "std", "min", "max", "l2_norm", "zero_fraction", "histogram")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    L2_NORM_FIELD_NUMBER: _ClassVar[int]
    ZERO_FRACTION_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    mean: float
    std: float
    min: float
    max: float
    l2_norm: float
    zero_fraction: float
    histogram: Histogram
    def __init__(self, mean: _Optional[float] = ..., std: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., l2_norm: _Optional[float] = ..., zero_fraction: _Optional[float] = ..., histogram: _Optional[_Union[Histogram, _Mapping]] = ...) -> None: ...

class ParameterStats(_message.Message):
    __slots__ = ("name", "shape", "count", "trainable", "value", "grad")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    count: int
    trainable: bool
    value: Stats
    grad: Stats
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., count: _Optional[int] = ..., trainable: _Optional[bool] = ..., value: _Optional[_Union[Stats, _Mapping]] = ..., grad: _Optional[_Union[Stats, _Mapping]] = ...) -> None: ...

class LayerStats(_message.Message):
    __slots__ = ("layer", "type", "parameters", "grad_norm", "grad_norm_ratio")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_RATIO_FIELD_NUMBER: _ClassVar[int]
    layer: str
    type: str
    parameters: _containers.RepeatedCompositeFieldContainer[ParameterStats]
    grad_norm: float
    grad_norm_ratio: float
    def __init__(self, layer: _Optional[str] = ..., type: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[ParameterStats, _Mapping]]] = ..., grad_norm: _Optional[float] = ..., grad_norm_ratio: _Optional[float] = ...) -> None: ...

class LayerStatsRequest(_message.Message):
    __slots__ = ("model", "layers", "bins", "hist_min", "hist_max", "images", "target", "labels")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    HIST_MIN_FIELD_NUMBER: _ClassVar[int]
    HIST_MAX_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    model: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    bins: int
    hist_min: float
    hist_max: float
    images: _containers.RepeatedCompositeFieldContainer[Image]
    target: Target
    labels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., bins: _Optional[int] = ..., hist_min: _Optional[float] = ..., hist_max: _Optional[float] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., labels: _Optional[_Iterable[int]] = ...) -> None: ...

class LayerStatsResponse(_message.Message):
    __slots__ = ("layers", "loss", "timing")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerStats]
    loss: float
    timing: Timing
    def __init__(self, layers: _Optional[_Iterable[_Union[LayerStats, _Mapping]]] = ..., loss: _Optional[float] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class ExplainOptions(_message.Message):
    __slots__ = ("batch_size", "steps", "baseline", "window", "stride", "noise_tunnel", "nt_samples", "nt_stdev", "aug_smooth", "eigen_smooth", "samples", "noise", "faithfulness", "seed", "fem_k", "finer_alpha", "finer_classes", "kpca_kernel", "kpca_gamma", "parameters", "metrics")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OptionValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OptionValue, _Mapping]] = ...) -> None: ...
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    NOISE_TUNNEL_FIELD_NUMBER: _ClassVar[int]
    NT_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NT_STDEV_FIELD_NUMBER: _ClassVar[int]
    AUG_SMOOTH_FIELD_NUMBER: _ClassVar[int]
    EIGEN_SMOOTH_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FEM_K_FIELD_NUMBER: _ClassVar[int]
    FINER_ALPHA_FIELD_NUMBER: _ClassVar[int]
    FINER_CLASSES_FIELD_NUMBER: _ClassVar[int]
    KPCA_KERNEL_FIELD_NUMBER: _ClassVar[int]
    KPCA_GAMMA_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    steps: int
    baseline: str
    window: int
    stride: int
    noise_tunnel: str
    nt_samples: int
    nt_stdev: float
    aug_smooth: bool
    eigen_smooth: bool
    samples: int
    noise: float
    faithfulness: bool
    seed: int
    fem_k: float
    finer_alpha: float
    finer_classes: int
    kpca_kernel: str
    kpca_gamma: float
    parameters: _containers.MessageMap[str, OptionValue]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, batch_size: _Optional[int] = ..., steps: _Optional[int] = ..., baseline: _Optional[str] = ..., window: _Optional[int] = ..., stride: _Optional[int] = ..., noise_tunnel: _Optional[str] = ..., nt_samples: _Optional[int] = ..., nt_stdev: _Optional[float] = ..., aug_smooth: _Optional[bool] = ..., eigen_smooth: _Optional[bool] = ..., samples: _Optional[int] = ..., noise: _Optional[float] = ..., faithfulness: _Optional[bool] = ..., seed: _Optional[int] = ..., fem_k: _Optional[float] = ..., finer_alpha: _Optional[float] = ..., finer_classes: _Optional[int] = ..., kpca_kernel: _Optional[str] = ..., kpca_gamma: _Optional[float] = ..., parameters: _Optional[_Mapping[str, OptionValue]] = ..., metrics: _Optional[_Iterable[str]] = ...) -> None: ...

class OptionValue(_message.Message):
    __slots__ = ("bool_value", "int_value", "double_value", "string_value")
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    bool_value: bool
    int_value: int
    double_value: float
    string_value: str
    def __init__(self, bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., string_value: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "images", "method", "target", "layers", "options", "render_overlay", "render_heatmap", "render", "targets")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RENDER_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    RENDER_HEATMAP_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[Image]
    method: str
    target: Target
    layers: _containers.RepeatedScalarFieldContainer[str]
    options: ExplainOptions
    render_overlay: bool
    render_heatmap: bool
    render: RenderOptions
    targets: _containers.RepeatedCompositeFieldContainer[Target]
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., method: _Optional[str] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., layers: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[ExplainOptions, _Mapping]] = ..., render_overlay: _Optional[bool] = ..., render_heatmap: _Optional[bool] = ..., render: _Optional[_Union[RenderOptions, _Mapping]] = ..., targets: _Optional[_Iterable[_Union[Target, _Mapping]]] = ...) -> None: ...

class Faithfulness(_message.Message):
    __slots__ = ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence", "road_morf", "road_lerf")
    DELETION_AUC_FIELD_NUMBER: _ClassVar[int]
    INSERTION_AUC_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_DROP_FIELD_NUMBER: _ClassVar[int]
    INCREASE_IN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ROAD_MORF_FIELD_NUMBER: _ClassVar[int]
    ROAD_LERF_FIELD_NUMBER: _ClassVar[int]
    deletion_auc: float
    insertion_auc: float
    average_drop: float
    increase_in_confidence: float
    road_morf: float
    road_lerf: float
    def __init__(self, deletion_auc: _Optional[float] = ..., insertion_auc: _Optional[float] = ..., average_drop: _Optional[float] = ..., increase_in_confidence: _Optional[float] = ..., road_morf: _Optional[float] = ..., road_lerf: _Optional[float] = ...) -> None: ...

class ClassExplanation(_message.Message):
    __slots__ = ("target", "label", "score", "probability", "heatmap", "heatmap_upsampled", "overlay_png", "heatmap_png", "faithfulness")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_UPSAMPLED_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_PNG_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    target: int
    label: str
    score: float
    probability: float
    heatmap: Tensor
    heatmap_upsampled: Tensor
    overlay_png: bytes
    heatmap_png: bytes
    faithfulness: Faithfulness
    def __init__(self, target: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., probability: _Optional[float] = ..., heatmap: _Optional[_Union[Tensor, _Mapping]] = ..., heatmap_upsampled: _Optional[_Union[Tensor, _Mapping]] = ..., overlay_png: _Optional[bytes] = ..., heatmap_png: _Optional[bytes] = ..., faithfulness: _Optional[_Union[Faithfulness, _Mapping]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("classes",)
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedCompositeFieldContainer[ClassExplanation]
    def __init__(self, classes: _Optional[_Iterable[_Union[ClassExplanation, _Mapping]]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("explanations", "method", "layers", "timing")
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    explanations: _containers.RepeatedCompositeFieldContainer[Explanation]
    method: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    timing: Timing
    def __init__(self, explanations: _Optional[_Iterable[_Union[Explanation, _Mapping]]] = ..., method: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class ExplainStreamRequest(_message.Message):
    __slots__ = ("id", "request", "progress")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: ExplainRequest
    progress: bool
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[ExplainRequest, _Mapping]] = ..., progress: _Optional[bool] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "status")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    status: _status_pb2.Status
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class ExplainStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error", "progress")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    response: ExplainResponse
    error: ItemError
    progress: StreamProgress
    def __init__(self, id: _Optional[str] = ..., response: _Optional[_Union[ExplainResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ..., progress: _Optional[_Union[StreamProgress, _Mapping]] = ...) -> None: ...

class StreamProgress(_message.Message):
    __slots__ = ("pending",)
    PENDING_FIELD_NUMBER: _ClassVar[int]
    pending: int
    def __init__(self, pending: _Optional[int] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BuildInfo(_message.Message):
    __slots__ = ("git_commit", "python", "torch", "torchvision", "captum", "grpc", "cuda")
    GIT_COMMIT_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    TORCH_FIELD_NUMBER: _ClassVar[int]
    TORCHVISION_FIELD_NUMBER: _ClassVar[int]
    CAPTUM_FIELD_NUMBER: _ClassVar[int]
    GRPC_FIELD_NUMBER: _ClassVar[int]
    CUDA_FIELD_NUMBER: _ClassVar[int]
    git_commit: str
    python: str
    torch: str
    torchvision: str
    captum: str
    grpc: str
    cuda: str
    def __init__(self, git_commit: _Optional[str] = ..., python: _Optional[str] = ..., torch: _Optional[str] = ..., torchvision: _Optional[str] = ..., captum: _Optional[str] = ..., grpc: _Optional[str] = ..., cuda: _Optional[str] = ...) -> None: ...

class DeviceInfo(_message.Message):
    __slots__ = ("name", "description", "total_memory_bytes", "capability")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    total_memory_bytes: int
    capability: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., total_memory_bytes: _Optional[int] = ..., capability: _Optional[_Iterable[int]] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_message_bytes", "max_pixels", "max_images", "stream_batch", "explain")
    class ExplainEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_FIELD_NUMBER: _ClassVar[int]
    STREAM_BATCH_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_pixels: int
    max_images: int
    stream_batch: int
    explain: _containers.ScalarMap[str, int]
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_pixels: _Optional[int] = ..., max_images: _Optional[int] = ..., stream_batch: _Optional[int] = ..., explain: _Optional[_Mapping[str, int]] = ...) -> None: ...

class OptionSchema(_message.Message):
    __slots__ = ("name", "type", "default", "minimum", "ceiling", "ceiling_value", "choices", "description", "methods", "minimum_exclusive", "within_input", "requires")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    CEILING_FIELD_NUMBER: _ClassVar[int]
    CEILING_VALUE_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    WITHIN_INPUT_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default: _struct_pb2.Value
    minimum: float
    ceiling: str
    ceiling_value: int
    choices: _containers.RepeatedScalarFieldContainer[str]
    description: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    minimum_exclusive: bool
    within_input: bool
    requires: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., minimum: _Optional[float] = ..., ceiling: _Optional[str] = ..., ceiling_value: _Optional[int] = ..., choices: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., minimum_exclusive: _Optional[bool] = ..., within_input: _Optional[bool] = ..., requires: _Optional[str] = ...) -> None: ...

class MethodInfo(_message.Message):
    __slots__ = ("name", "family", "description", "source", "needs", "cost", "draws_noise", "may_batch", "signed", "options")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    DRAWS_NOISE_FIELD_NUMBER: _ClassVar[int]
    MAY_BATCH_FIELD_NUMBER: _ClassVar[int]
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    family: str
    description: str
    source: str
    needs: _containers.RepeatedScalarFieldContainer[str]
    cost: str
    draws_noise: bool
    may_batch: bool
    signed: bool
    options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., family: _Optional[str] = ..., description: _Optional[str] = ..., source: _Optional[str] = ..., needs: _Optional[_Iterable[str]] = ..., cost: _Optional[str] = ..., draws_noise: _Optional[bool] = ..., may_batch: _Optional[bool] = ..., signed: _Optional[bool] = ..., options: _Optional[_Iterable[str]] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "build", "devices", "dtypes", "colormaps", "limits", "methods", "options", "models", "default_method")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    DTYPES_FIELD_NUMBER: _ClassVar[int]
    COLORMAPS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_METHOD_FIELD_NUMBER: _ClassVar[int]
    version: str
    build: BuildInfo
    devices: _containers.RepeatedCompositeFieldContainer[DeviceInfo]
    dtypes: _containers.RepeatedScalarFieldContainer[str]
    colormaps: _containers.RepeatedScalarFieldContainer[str]
    limits: ServerLimits
    methods: _containers.RepeatedCompositeFieldContainer[MethodInfo]
    options: _containers.RepeatedCompositeFieldContainer[OptionSchema]
    models: _containers.RepeatedScalarFieldContainer[str]
    default_method: str
    def __init__(self, version: _Optional[str] = ..., build: _Optional[_Union[BuildInfo, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[DeviceInfo, _Mapping]]] = ..., dtypes: _Optional[_Iterable[str]] = ..., colormaps: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ..., methods: _Optional[_Iterable[_Union[MethodInfo, _Mapping]]] = ..., options: _Optional[_Iterable[_Union[OptionSchema, _Mapping]]] = ..., models: _Optional[_Iterable[str]] = ..., default_method: _Optional[str] = ...) -> None: ...
