"""Pinned host batches and non-blocking copies: the plain operations on the
CPU; on CUDA (run only where a GPU is present: not yet run, no GPU was lent
to the session that wrote this) pinned batches and one copy per batch."""
from __future__ import annotations

import pytest
import torch

from netscope.server.models import transfer
from netscope.server.imaging import DEFAULT_MAX_PIXELS
from netscope.server.models.registry import Batching, Registry
from netscope.server.rpc.service import InspectorService
from netscope.v1 import inspector_pb2 as pb

from .conftest import encode

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def parts(n=3):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, 8, 8, generator=g) for _ in range(n)]


def test_on_the_cpu_pinning_changes_nothing(store, photos):
    xs = parts()
    assert torch.equal(transfer.cat(xs, pin=False), torch.cat(xs))
    assert torch.equal(transfer.stack([x[0] for x in xs], pin=False), torch.stack([x[0] for x in xs]))
    assert not transfer.can_pin(torch.device("cpu"))
    m = Registry(store).load("pin-cpu", "squeezenet1_1", device="cpu", pin_memory=True, channels_last=True)
    try:
        assert m.pin_memory and not m.pinned  # asked for, but there is nothing to pin for
        x = InspectorService(Registry(store), decode_threads=1).preprocess(m, [pb.Image(encoded=encode(photos["coffee"]))])
        assert not x.is_pinned()
        moved = m.to_device(x)
        assert torch.equal(moved, x) and moved.is_contiguous(memory_format=torch.channels_last)
    finally:
        m.close()


@cuda
def test_pinned_batches_and_one_copy_per_batch(store, photos):
    images = [pb.Image(encoded=encode(photos[n])) for n in ("chelsea", "coffee", "rocket")]
    service = InspectorService(Registry(store), decode_threads=2)
    pinned = service.registry.load("pin-on", "squeezenet1_1", device="cuda", batching=Batching(8, 5.0))
    plain = service.registry.load("pin-off", "squeezenet1_1", device="cuda", pin_memory=False)
    try:
        assert pinned.pinned and not plain.pinned
        x = service.preprocess(pinned, images)
        assert x.is_pinned() and not service.preprocess(plain, images).is_pinned()
        assert transfer.cat([x, x], pin=True).is_pinned()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            logits = pinned.infer(x)
            torch.cuda.synchronize()
        copies = [e for e in prof.events() if "Memcpy HtoD" in e.name]
        assert len(copies) == 1, [e.name for e in copies]
        torch.testing.assert_close(logits, plain.infer(service.preprocess(plain, images)))
    finally:
        for m in ("pin-on", "pin-off"):
            service.registry.unload(m)
        service.close()


@cuda
def test_device_decode_on_cuda_matches_opencv_within_a_few_levels(photos):
    """nvJPEG is not libjpeg-turbo: allow a few grey levels (to be confirmed
    on the first GPU run)."""
    from netscope.server.imaging import device_decode
    from netscope.server import imaging
    from netscope.server.imaging import Preprocessing

    r = Preprocessing()
    for rgb in photos.values():
        data = encode(rgb)
        want = imaging.preprocess(imaging.decode(data), r)
        got = device_decode.decode_and_preprocess({0: data}, r, torch.device("cuda"), DEFAULT_MAX_PIXELS)[0]
        assert got.device.type == "cuda"
        levels = (got.cpu() - want).abs() * torch.tensor(r.std)[:, None, None] * 255
        assert float(levels.mean()) <= 1.0 and float(levels.max()) <= 16, float(levels.max())
