"""Long streams and non-finite or huge frames: the C step follows the spec's re-sync rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

import deltarnn  # noqa: E402
from deltarnn.errors import ConfigError  # noqa: E402
from deltarnn.export import HostBuild, export_c  # noqa: E402

STEPS = 12_000


def test_long_dense_stream_stays_on_torch_with_the_resync(cc, fsdd_frames, tmp_path):
    """Θ = 0 over 12,000 frames: the accumulated memories drift from W x + b by float rounding;
    with the periodic dense re-sync the distance to torch.nn.GRU at the end is what it was in
    the first frames (float32 rounding, about 1e-5), without it it grows several times."""
    torch.manual_seed(0)
    model = deltarnn.DeltaGRU(40, 64, 2)
    frames = fsdd_frames.repeat(STEPS // fsdd_frames.shape[0] + 1, 1)[:STEPS].contiguous()
    with torch.no_grad():
        ref = deltarnn.to_torch(model)(frames[:, None])[0][:, 0].numpy()
    growth = {}
    for every in (1024, 0):
        build = HostBuild(export_c(model, tmp_path / str(every), resync_every=every), cc=cc)
        error = np.abs(build.run(frames.numpy())[0] - ref)
        first, last = float(error[:1000].max()), float(error[-1000:].max())
        assert first < 2e-5
        growth[every] = last / first
    assert growth[1024] < 1.5 and growth[0] > 3, growth


def test_resync_every_must_be_a_count(tmp_path):
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="resync_every"):
            export_c(deltarnn.DeltaGRU(4, 3), tmp_path / "out", resync_every=bad)
