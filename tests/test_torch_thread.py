"""A CPU model's torch work runs on the server's one torch thread
(server/torch_thread.py): every RPC that runs the model, through a real server."""
from __future__ import annotations

import threading

import pytest

from netscope.server import torch_thread


@pytest.fixture
def forward_threads(server):
    """Names of the threads that run forward passes of the session's r18 while the test runs."""
    module = server.registry.get("r18").module
    names: list[str] = []
    handle = module.register_forward_pre_hook(lambda m, args: names.append(threading.current_thread().name))
    yield names
    handle.remove()


def test_every_rpc_runs_the_model_on_the_torch_thread(client, forward_threads, photos):
    rgb = photos["chelsea"][:128, :128]
    client.predict("r18", rgb)
    client.explain("r18", rgb, method="grad_cam")
    client.explain("r18", rgb, method="grad_cam", faithfulness=True)
    client.feature_maps("r18", rgb, ["layer1"], top_channels=2)
    client.layer_stats("r18", layers=["fc"], images=rgb)
    client.model_info("r18", input_size=(3, 64, 64))  # a summary at another size runs the model
    assert len(forward_threads) >= 6
    assert {name.split("_")[0] for name in forward_threads} == {"netscope-torch"}, forward_threads


def test_run_returns_raises_and_nests():
    assert torch_thread.run("cpu", lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(KeyError, match="boom"):
        torch_thread.run(None, lambda: {}["boom"])
    # From the torch thread itself a nested call runs at once instead of waiting for itself.
    outer = torch_thread.run("cpu", lambda: (threading.current_thread().name,
                                             torch_thread.run("cpu", lambda: threading.current_thread().name)))
    assert outer[0] == outer[1] and outer[0].startswith("netscope-torch")
    assert not torch_thread.on_torch_thread()


def test_work_for_another_device_runs_in_the_callers_thread():
    here = threading.current_thread().name
    assert torch_thread.run("cuda:0", lambda: threading.current_thread().name) == here
