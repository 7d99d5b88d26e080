import os
import time

import pytest

from netscope.training.checkpoint import load_checkpoint
from netscope.training.demo import ensure_demo
from netscope.training.train import main

from .conftest import TINY


def test_existing_demo_is_served_as_is_and_is_the_serve_default(tmp_path):
    from netscope.cli.serve import default_models
    from netscope.server.app import ServerConfig

    path = tmp_path / "demo.pt"
    assert main([*TINY, "--epochs", "1", "--no-tensorboard", "--out", str(path)]) == 0
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert ensure_demo(tmp_path) == path and path.stat().st_mtime_ns == before  # not trained again
    specs = default_models(ServerConfig(store=str(tmp_path)))
    assert (specs[0].id, specs[0].source) == ("demo", "demo")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NETSCOPE_SLOW"), reason="trains the full demo (~1 min); NETSCOPE_SLOW=1")
def test_demo_recipe_reaches_95_percent_in_two_minutes(tmp_path):
    t0 = time.time()
    path = ensure_demo(tmp_path, progress=False)
    assert time.time() - t0 < 120
    assert load_checkpoint(path)["metrics"]["test_acc"] >= 0.95


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NETSCOPE_SLOW"), reason="trains the full demo (~1 min); NETSCOPE_SLOW=1")
def test_serve_model_named_demo_trains_it_into_an_empty_store(tmp_path):
    from netscope.cli.serve import ensure_named_demo
    from netscope.server.app import ModelSpec, ServerConfig

    ensure_named_demo(ServerConfig(store=str(tmp_path), models=[ModelSpec.parse("d=demo")]))
    assert load_checkpoint(tmp_path / "demo.pt")["metrics"]["test_acc"] >= 0.9
