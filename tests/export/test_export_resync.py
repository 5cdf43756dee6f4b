"""Long streams, a short re-sync period, and non-finite or huge frames: the C step follows the
spec's re-sync rule (:mod:`deltarnn.functional.state`) and lets NaN and inf through as torch does."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from tests.export.helpers import assert_close, make_model, spec_stream

import deltarnn
from deltarnn.errors import ConfigError
from deltarnn.export import HostBuild, export_c
from deltarnn.functional import MEMORY_BOUND, RESYNC_EVERY

STEPS = 12_000
# One input feature of two frames replaced by these (the first frame after the memories became
# non-finite or huge re-syncs them; the second checks the stream came back).
SPECIAL = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "1e30": 1e30, "-1e30": -1e30}
AT = ((40, 3), (100, 17))


def _special_frames(frames: torch.Tensor, value: float) -> torch.Tensor:
    x = frames.clone()
    for t, j in AT:
        x[t, j] = value
    return x


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
    for every in (RESYNC_EVERY, 0):
        build = HostBuild(export_c(model, tmp_path / str(every), resync_every=every), cc=cc)
        error = np.abs(build.run(frames.numpy())[0] - ref)
        first, last = float(error[:1000].max()), float(error[-1000:].max())
        assert first < 2e-5
        growth[every] = last / first
    assert growth[RESYNC_EVERY] < 1.5 and growth[0] > 3, growth


def test_the_rules_constants_are_the_specs(tmp_path):
    export = export_c(deltarnn.DeltaGRU(4, 3), tmp_path / "out")
    defines = dict(re.findall(r"#define MODEL_(\w+) (\S+)", export.header.read_text()))
    defines.update(re.findall(r"#define MODEL_(\w+) (\S+)", export.source.read_text()))
    assert int(defines["RESYNC_EVERY"]) == RESYNC_EVERY
    assert float(defines["MEMORY_BOUND"].rstrip("f")) == MEMORY_BOUND


@pytest.mark.parametrize("weights", ["float32", "int8"])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_short_resync_period_equals_the_spec(cc, fsdd_frames, tmp_path, kind, weights):
    """Every 7th step recomputes the memories densely, in C as in the spec: outputs to float
    rounding, send counts and each layer's since_sync after every step exactly."""
    every = 7
    model = make_model(kind, 2, head=True, seed=5)
    build = HostBuild(export_c(model, tmp_path, weights=weights, resync_every=every), cc=cc)
    ref, ref_x, ref_h, ref_since = spec_stream(
        model, fsdd_frames, weights=weights, resync_every=every
    )
    since = []
    for t in range(fsdd_frames.shape[0]):
        assert_close(build.step(fsdd_frames[t].numpy()), ref[t])
        np.testing.assert_array_equal(np.stack(build.last_sent), [ref_x[t], ref_h[t]])
        since.append(build.since_sync)
    np.testing.assert_array_equal(since, ref_since)
    assert ref_since.max() == every - 1 and (ref_since == 0).sum() >= 2 * (len(ref) // every)


@pytest.mark.parametrize("weights", ["float32", "int8"])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_nonfinite_and_huge_frames_equal_the_spec(cc, fsdd_frames, tmp_path, kind, weights):
    """Per-feature thresholds: a NaN change is sent (NaN then reaches every output from that
    frame on, as in torch); an inf or a 1e30 saturates the gates for a frame and the re-sync at
    the next one brings the memories back to W x̂ + W ĥ + b."""
    model = make_model(kind, 2, seed=2)
    build = HostBuild(export_c(model, tmp_path, weights=weights), cc=cc)
    first = AT[0][0]
    for value in SPECIAL:
        frames = _special_frames(fsdd_frames, SPECIAL[value])
        build.reset()
        out, sent_x, sent_h = build.run(frames.numpy())
        ref, ref_x, ref_h, _ = spec_stream(model, frames, weights=weights)
        assert_close(out, ref)  # NaN where the spec has NaN, and only there
        np.testing.assert_array_equal(sent_x, ref_x)
        np.testing.assert_array_equal(sent_h, ref_h)
        if value == "nan":
            assert np.isnan(out[first:]).all() and np.isfinite(out[:first]).all()
            assert (sent_h[first + 1 :] == 24).all()  # a NaN h differs from every ĥ: always sent
        else:
            assert np.isfinite(out).all(), value


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_nonfinite_and_huge_frames_at_theta_zero_equal_dense_torch(cc, fsdd_frames, tmp_path, kind):
    """Θ = 0 after NaN, inf and 1e30 frames: the C step is torch.nn.GRU/LSTM to 1e-5 at every
    frame, the ones after included (the bound rule re-syncs the memories)."""
    model = make_model(kind, 2, thetas=False)
    build = HostBuild(export_c(model, tmp_path), cc=cc)
    dense = deltarnn.to_torch(model)
    for value in SPECIAL.values():
        frames = _special_frames(fsdd_frames, value)
        build.reset()
        out, _, _ = build.run(frames.numpy())
        with torch.no_grad():
            ref = dense(frames[:, None])[0][:, 0].numpy()
        assert_close(out, ref)


def test_resync_every_must_be_a_count(tmp_path):
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="resync_every"):
            export_c(deltarnn.DeltaGRU(4, 3), tmp_path / "out", resync_every=bad)
