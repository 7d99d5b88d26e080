"""netscope client: typed Python client, the `netscope` command and benchmarks."""
from .client import (
    ClassScore,
    Client,
    FeatureMap,
    Kernels,
    LayerStats,
    LayerStatsResult,
    ModelBrief,
    ModelInfo,
    NetscopeError,
    ParameterStats,
    Prediction,
    Stats,
    Timing,
)

__all__ = ["Client", "ClassScore", "ModelBrief", "ModelInfo", "NetscopeError", "Prediction", "Timing",
           "FeatureMap", "Kernels", "LayerStats", "LayerStatsResult", "ParameterStats", "Stats"]
