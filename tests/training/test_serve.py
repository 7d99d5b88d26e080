"""Done means: a model trained here, served by a real server, predicts through the typed
client with the accuracy training reported."""
import cv2
import numpy as np
import pytest

from netscope.training.checkpoint import load_checkpoint
from netscope.training.data import build_datasets
from netscope.training.train import main


def _png(chw_uint8) -> bytes:
    rgb = chw_uint8.permute(1, 2, 0).numpy()
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def test_trained_checkpoint_served_with_the_reported_accuracy(store, client):
    out = store / "digits-small.pt"
    assert main(["--data", "digits", "--arch", "simple_cnn", "--arch-arg", "widths=[8,16,32]", "--epochs", "4",
                 "--lr", "8e-3", "--threads", "1", "--no-progress", "--no-tensorboard", "--out", str(out)]) == 0
    ck = load_checkpoint(out)
    reported = ck["metrics"]["test_acc"]
    assert reported > 0.5  # it learned something, so agreement is not a coincidence of chance

    info = client.load_model("digits", "digits-small")
    try:
        assert list(info.class_names) == [str(i) for i in range(10)]
        # the same test images training scored, as PNG files a user would send
        ds = build_datasets("digits", split=ck["extra"]["data"]["split"])
        images, labels = zip(*(ds.test.base[i] for i in range(len(ds.test))))
        preds = []
        for start in range(0, len(images), 64):
            preds += client.predict("digits", [_png(x) for x in images[start:start + 64]], k=1)
        served = np.mean([p.top1.index == y for p, y in zip(preds, labels)])
        assert preds[0].top1.label == str(preds[0].top1.index)
        assert served == pytest.approx(reported, abs=1e-9)
    finally:
        client.unload_model("digits")
