"""Feature augmentation: speed perturbation, tempo stretch, SpecAugment masks, version picks."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from deltarnn.data.augment import (
    FeatureAugment,
    pick_versions,
    spec_mask,
    speed_perturb,
    speed_perturbed_features,
    time_stretch,
)
from deltarnn.data.features import FeatureCache, FeatureParams
from deltarnn.errors import ConfigError, ShapeError


def _tone(freq: float, seconds: float, rate: int = 8000) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


# --- speed_perturb ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.9, 1.1, 2.0])
def test_speed_perturb_scales_duration_and_pitch(rate):
    x = _tone(500.0, 1.0)
    y = speed_perturb(x, rate)
    assert y.dtype == np.float32
    assert abs(len(y) - len(x) / rate) <= 2
    assert _peak_hz(y) == pytest.approx(500.0 * rate, rel=0.01)


def test_speed_perturb_rate_one_is_a_copy():
    x = _tone(300.0, 0.1)
    y = speed_perturb(x, 1.0)
    np.testing.assert_array_equal(x, y)
    assert y is not x


def test_speed_perturb_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="rate"):
        speed_perturb(_tone(300.0, 0.1), 0.0)
    with pytest.raises(ShapeError, match="waveform"):
        speed_perturb(np.zeros((2, 10), np.float32), 1.1)


def test_speed_perturbed_features_are_cached_and_rate_one_is_plain(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(400.0, 0.5), 8000)
    params = FeatureParams()
    cache = FeatureCache(tmp_path / "cache")
    (plain,) = speed_perturbed_features([path], params, 1.0, cache)
    np.testing.assert_array_equal(plain, params.compute_file(path))
    (fast,) = speed_perturbed_features([path], params, 1.25, cache)
    assert abs(fast.shape[0] - (plain.shape[0] - 1) / 1.25 - 1) <= 1
    misses = cache.misses
    (again,) = speed_perturbed_features([path], params, 1.25, cache)
    assert cache.misses == misses and cache.hits >= 1
    np.testing.assert_array_equal(fast, again)
    (uncached,) = speed_perturbed_features([path], params, 1.25, None)
    np.testing.assert_allclose(uncached, fast, rtol=0, atol=1e-5)


# --- time_stretch ----------------------------------------------------------------------------


def test_time_stretch_interpolates_linearly_between_end_points():
    ramp = torch.arange(11, dtype=torch.float64)[:, None] * torch.tensor([[1.0, -2.0]])
    slow = time_stretch(ramp, 0.5)  # twice as many frames
    assert slow.shape == (22, 2)
    torch.testing.assert_close(slow[0], ramp[0])
    torch.testing.assert_close(slow[-1], ramp[-1])
    expected = torch.linspace(0, 10, 22, dtype=torch.float64)[:, None] * torch.tensor([[1.0, -2.0]])
    torch.testing.assert_close(slow, expected)
    assert time_stretch(ramp, 2.0).shape == (6, 2)  # round(11 / 2)


def test_time_stretch_edge_cases():
    one = torch.ones(1, 3)
    assert time_stretch(one, 0.5).shape == (2, 3)
    assert time_stretch(torch.ones(3, 2), 100.0).shape == (1, 2)
    x = torch.randn(7, 4)
    same = time_stretch(x, 1.0)
    torch.testing.assert_close(same, x)
    assert same.data_ptr() != x.data_ptr()
    with pytest.raises(ShapeError, match=r"\(T, F\)"):
        time_stretch(torch.ones(3), 1.1)
    with pytest.raises(ConfigError, match="rate"):
        time_stretch(x, -1.0)


# --- spec_mask -------------------------------------------------------------------------------


def test_spec_mask_sets_stripes_and_keeps_the_rest():
    x = torch.arange(1, 1 + 100 * 40, dtype=torch.float32).view(100, 40)  # no zero anywhere
    y = spec_mask(
        x, torch.Generator().manual_seed(3), time_masks=2, time_width=10, freq_masks=2, freq_width=6
    )
    masked = y == 0
    rows = masked.all(1)
    cols = masked.all(0)
    assert 0 < int(rows.sum()) <= 20 and 0 < int(cols.sum()) <= 12
    # Every masked cell lies on a masked row or column; everything else is untouched.
    assert bool((masked == (rows[:, None] | cols[None, :])).all())
    assert torch.equal(y[~masked], x[~masked])
    again = spec_mask(
        x, torch.Generator().manual_seed(3), time_masks=2, time_width=10, freq_masks=2, freq_width=6
    )
    assert torch.equal(y, again)
    assert bool((x != 0).all())  # the input was not modified in place


def test_spec_mask_spares_short_sequences_and_zero_masks():
    g = torch.Generator().manual_seed(0)
    short = torch.ones(4, 8)
    assert torch.equal(spec_mask(short, g, time_masks=5, time_width=10, freq_masks=0), short)
    x = torch.randn(50, 8)
    assert torch.equal(spec_mask(x, g, time_masks=0, freq_masks=0), x)
    with pytest.raises(ConfigError, match="freq_width"):
        spec_mask(x, g, freq_width=-1)
    with pytest.raises(ShapeError):
        spec_mask(torch.ones(2, 3, 4), g)


# --- FeatureAugment, pick_versions -----------------------------------------------------------


def test_feature_augment_stretches_within_the_tempo_range_and_is_reproducible():
    aug = FeatureAugment(tempo=(0.8, 1.25), time_masks=1, freq_masks=1)
    x = torch.randn(100, 40)
    lengths = {aug(x, torch.Generator().manual_seed(s)).shape[0] for s in range(20)}
    assert min(lengths) >= 80 and max(lengths) <= 125 and len(lengths) > 3
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(FeatureAugment()(x, torch.Generator()), x)
    with pytest.raises(ConfigError, match="tempo"):
        FeatureAugment(tempo=(1.2, 0.9))


def test_pick_versions_draws_each_item_from_one_version():
    versions = [[np.full(2, 100 * v + i) for i in range(50)] for v in range(3)]
    picked = pick_versions(versions, torch.Generator().manual_seed(1))
    chosen = [int(p[0]) // 100 for p in picked]
    assert [int(p[0]) % 100 for p in picked] == list(range(50))
    assert set(chosen) == {0, 1, 2}
    again = pick_versions(versions, torch.Generator().manual_seed(1))
    assert all(np.array_equal(a, b) for a, b in zip(picked, again, strict=True))
    with pytest.raises(ShapeError, match="every version"):
        pick_versions([versions[0], versions[1][:3]], torch.Generator())
    with pytest.raises(ConfigError):
        pick_versions([], torch.Generator())
