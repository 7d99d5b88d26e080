"""Faithfulness metrics against hand computations on models whose evidence we place."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netscope.server.explain import faithfulness as F
from netscope.server.errors import InvalidArgument

H = W = 16


def region_model(scale: float = 10.0):
    """Class 1's logit is scale x the mean of the top-left quadrant; class 0's is 0."""

    def forward(batch):
        evidence = batch[:, :, : H // 2, : W // 2].mean(dim=(1, 2, 3)) * scale
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)

    return forward


@pytest.fixture
def quadrant():
    m = np.zeros((H, W))
    m[: H // 2, : W // 2] = 1.0
    return m


def test_deletion_and_insertion_curves_match_a_hand_computation(quadrant):
    forward = region_model()
    x = torch.ones(3, H, W)
    steps = 4
    got = F.evaluate(forward, x, quadrant, 1, steps=steps)
    # Deleting in ranked order: quadrant pixels go first (64 of 256 per 64-pixel step).
    order = F.ranking(quadrant)
    probs = []
    for s in range(steps + 1):
        kept = np.ones(H * W)
        kept[order[: round(H * W * s / steps)]] = 0
        evidence = kept.reshape(H, W)[: H // 2, : W // 2].mean() * 10
        probs.append(1 / (1 + np.exp(-evidence)))
    expected = sum((probs[i] + probs[i + 1]) / 2 for i in range(steps)) / steps
    assert got.deletion_auc == pytest.approx(expected, rel=1e-5)


def test_a_faithful_map_beats_its_inverse_on_every_metric(quadrant):
    forward = region_model()
    x = torch.zeros(3, H, W)
    x[:, : H // 2, : W // 2] = 1.0
    good = F.evaluate(forward, x, quadrant, 1, steps=8)
    bad = F.evaluate(forward, x, 1.0 - quadrant, 1, steps=8)
    assert good.deletion_auc < bad.deletion_auc
    assert good.insertion_auc > bad.insertion_auc
    assert good.average_drop == pytest.approx(0.0, abs=1e-6) and bad.average_drop > 40
    assert good.increase_in_confidence == 0.0
    assert good.road_morf < good.road_lerf
    assert good.road_morf < bad.road_morf


def test_imputation_is_the_weighted_mean_of_neighbours():
    x = torch.arange(25, dtype=torch.float32).reshape(1, 5, 5) ** 1.5
    removed = np.zeros(25, dtype=bool)
    removed[12] = True  # the centre
    out = F.impute(x, removed, noise=0.0, rng=np.random.default_rng(0))
    a = x[0].numpy()
    edge = (a[1, 2] + a[3, 2] + a[2, 1] + a[2, 3]) / 6
    diag = (a[1, 1] + a[1, 3] + a[3, 1] + a[3, 3]) / 12
    assert out[0, 2, 2].item() == pytest.approx(edge + diag, rel=1e-5)
    kept = torch.ones(5, 5, dtype=torch.bool)
    kept[2, 2] = False
    assert torch.equal(out[0][kept], x[0][kept])


def test_imputed_block_satisfies_its_linear_system():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(2, 12, 12)).astype(np.float32))
    removed = np.zeros((12, 12), dtype=bool)
    removed[3:9, 4:10] = True
    out = F.impute(x, removed.reshape(-1), noise=0.0, rng=rng)[0].numpy().astype(np.float64)
    for y, xx in zip(*np.nonzero(removed)):
        total = sum(w for dy, dx, w in F._NEIGHBOURS)
        mean = sum(w * out[y + dy, xx + dx] for dy, dx, w in F._NEIGHBOURS) / total
        assert out[y, xx] == pytest.approx(mean, abs=1e-4)


def test_map_of_the_wrong_size_is_invalid():
    with pytest.raises(InvalidArgument, match="must match"):
        F.evaluate(region_model(), torch.ones(3, H, W), np.ones((4, 4)), 1)
