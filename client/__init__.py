"""netscope client: typed Python client, the `netscope` command and benchmarks."""
from .client import Client, ClassScore, ModelBrief, ModelInfo, NetscopeError, Prediction, Timing

__all__ = ["Client", "ClassScore", "ModelBrief", "ModelInfo", "NetscopeError", "Prediction", "Timing"]
