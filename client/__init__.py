"""netscope client: the typed Python client library, its data classes and the
job fan-out (netscope.client.jobs). It imports neither the server nor
torch; the `netscope` command is netscope.cli."""
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
