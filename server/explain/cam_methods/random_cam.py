"""Random-CAM: the activations weighted by random channel weights.

A baseline, not an explanation: a method whose maps do no better than these
(pointing game, faithfulness) explains nothing about the model's decision.
As pytorch-grad-cam's RandomCAM: w_c ~ U(-b, b) per image and channel, the
map relu(sum_c w_c A_c). With a seed the weights are numpy's
RandomState(seed).uniform draws, the same numbers as pytorch-grad-cam's after
np.random.seed(seed) (b = 1); without one they are fresh each call.

This file is all a new CAM method takes: the registry (server/explain/methods.py)
imports every module of this package, and `cam_method` declares the method,
its option and what it needs.
"""
from __future__ import annotations

import numpy as np
import torch

from ..cams import Maps, Pass, cam_method
from ..methods import OptionSpec


@cam_method(name="random_cam", needs=("layer",), forward_only=True, draws_noise=True,
            options=(OptionSpec("weight_bound", "float", "random_cam: channel weights are drawn uniformly from "
                                "[-weight_bound, weight_bound] (default 1)", minimum=0.0, exclusive=True),),
            description="Random-CAM: activations weighted by uniformly random channel weights (a baseline)",
            source="pytorch-grad-cam (RandomCAM)")
def random_cam(p: Pass) -> Maps:
    bound = float(p.opts.get("weight_bound", 1.0))
    rng = np.random.RandomState(int(p.opts.seed) % 2**32) if p.opts.seed is not None else np.random.RandomState()
    maps: Maps = {}
    for n in p.layers:
        a = p.acts[n]
        draws = [rng.uniform(-bound, bound, size=a.shape[:2]) for _ in range(p.k)]
        maps[n] = [p.reduce(a, weights=torch.from_numpy(w).to(a.device, torch.float32)) for w in draws]
    return maps
