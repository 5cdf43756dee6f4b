"""Log-mel features, the on-disk feature cache, the normalizer, and data-root resolution."""

from __future__ import annotations

import json
import os

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from deltarnn.data import root as root_mod
from deltarnn.data.features import (
    FeatureCache,
    FeatureNormalizer,
    FeatureParams,
    load_audio,
    log_mel,
)
from deltarnn.errors import ConfigError, ShapeError

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _tone(freq: float, seconds: float, rate: int = 8000, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --- data root -------------------------------------------------------------------------------


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTARNN_DATA", str(tmp_path / "env"))
    assert root_mod.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert root_mod.data_root() == tmp_path / "env"
    monkeypatch.delenv("DELTARNN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert root_mod.data_root() == tmp_path / "xdg" / "deltarnn"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # XDG says: ignore relative values
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert root_mod.data_root() == tmp_path / "home" / ".cache" / "deltarnn"


def test_cache_dir_is_created_under_env_or_argument(tmp_path):
    d = root_mod.cache_dir("features")
    assert d == tmp_path / "cache" / "features" and d.is_dir()
    assert root_mod.cache_dir(cache_root=tmp_path / "other") == tmp_path / "other"


# --- log_mel ---------------------------------------------------------------------------------


def test_log_mel_shape_dtype_and_frame_count():
    x = _tone(440.0, 1.0)
    feats = log_mel(x, 8000)
    assert feats.shape == (1 + 8000 // 80, 40) and feats.dtype == np.float32
    assert np.all(np.isfinite(feats))
    other = log_mel(x[:1234], 8000, n_mels=64, hop_ms=5.0)
    assert other.shape == (1 + 1234 // 40, 64)


def test_log_mel_tone_peaks_in_the_band_around_its_frequency():
    feats = log_mel(_tone(1000.0, 0.5), 8000, fmin=20.0)
    # Band centres are the inner points of librosa's n_mels + 2 mel-spaced edges.
    centres = librosa.mel_frequencies(n_mels=42, fmin=20.0, fmax=4000.0)[1:-1]
    assert int(np.argmax(feats.mean(axis=0))) == int(np.argmin(np.abs(centres - 1000.0)))


def test_log_mel_of_silence_is_log_floor():
    feats = log_mel(np.zeros(800, np.float32), 8000, floor=1e-6)
    np.testing.assert_allclose(feats, np.log(np.float32(1e-6)), rtol=1e-6)


@pytest.mark.parametrize(
    ("waveform", "kwargs", "error"),
    [
        (np.zeros((2, 100), np.float32), {}, ShapeError),
        (np.zeros(0, np.float32), {}, ShapeError),
        (np.array([0.0, np.nan], np.float32), {}, ConfigError),
        (np.zeros(100, np.float32), {"fmax": 5000.0}, ConfigError),
        (np.zeros(100, np.float32), {"fmin": 3000.0, "fmax": 2000.0}, ConfigError),
        (np.zeros(100, np.float32), {"hop_ms": 30.0}, ConfigError),
        (np.zeros(100, np.float32), {"n_mels": 0}, ConfigError),
        (np.zeros(100, np.float32), {"floor": 0.0}, ConfigError),
    ],
)
def test_log_mel_rejects_bad_input(waveform, kwargs, error):
    with pytest.raises(error):
        log_mel(waveform, 8000, **kwargs)


def test_log_mel_rejects_bad_sample_rate():
    with pytest.raises(ConfigError, match="sample_rate"):
        log_mel(np.zeros(100, np.float32), 0)
    with pytest.raises(ConfigError, match="sample_rate"):
        log_mel(np.zeros(100, np.float32), 8000.0)


def test_load_audio_resamples_and_mixes_to_mono(tmp_path):
    stereo = np.stack([_tone(500.0, 0.5, rate=16000), np.zeros(8000, np.float32)], axis=1)
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 16000)
    native, rate = load_audio(path)
    assert rate == 16000 and native.shape == (8000,) and native.dtype == np.float32
    np.testing.assert_allclose(native, stereo.mean(axis=1), atol=1e-4)
    down, rate = load_audio(path, 8000)
    assert rate == 8000 and down.shape == (4000,)
    # Same tone at the new rate: the features match those of a tone made at 8 kHz.
    ref = log_mel(_tone(500.0, 0.5) / 2, 8000)
    got = log_mel(down, 8000)
    band = int(np.argmax(ref.mean(axis=0)))
    assert int(np.argmax(got.mean(axis=0))) == band


# --- cache -----------------------------------------------------------------------------------


def test_feature_cache_hit_is_identical_and_edits_miss(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(700.0, 0.3), 8000)
    cache = FeatureCache(tmp_path / "fc")
    params = FeatureParams()
    first = cache.features(path, params)
    second = cache.features(path, params)
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, params.compute_file(path))
    cache.features(path, FeatureParams(n_mels=20))
    assert cache.misses == 2
    sf.write(path, _tone(300.0, 0.4), 8000)
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    changed = cache.features(path, params)
    assert cache.misses == 3 and changed.shape[0] != first.shape[0]


def test_feature_cache_recomputes_an_unreadable_file(tmp_path):
    cache = FeatureCache(tmp_path / "fc")
    cache.get_or_compute("k", lambda: {"x": np.arange(3.0)})
    (file,) = list((tmp_path / "fc").glob("*.safetensors"))
    file.write_bytes(b"not a safetensors file")
    got = cache.get_or_compute("k", lambda: {"x": np.arange(4.0)})
    np.testing.assert_array_equal(got["x"], np.arange(4.0))


# --- normalizer ------------------------------------------------------------------------------


def test_normalizer_fit_matches_pooled_statistics_and_roundtrips(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 5)).astype(np.float32) for n in (7, 1, 30, 12)]
    norm = FeatureNormalizer.fit(chunks)
    pooled = np.concatenate(chunks).astype(np.float64)
    np.testing.assert_allclose(norm.mean, pooled.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(norm.std, pooled.std(axis=0), rtol=1e-10)
    out = norm(pooled.astype(np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-5)
    t = norm(torch.from_numpy(chunks[2]))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), norm(chunks[2]), atol=1e-6)
    norm.save(tmp_path / "norm.json")
    assert set(json.loads((tmp_path / "norm.json").read_text())) == {"mean", "std"}
    again = FeatureNormalizer.load(tmp_path / "norm.json")
    np.testing.assert_array_equal(again.mean, norm.mean)
    np.testing.assert_array_equal(again.std, norm.std)


def test_normalizer_rejects_bad_input():
    with pytest.raises(ConfigError, match="empty"):
        FeatureNormalizer.fit([])
    with pytest.raises(ShapeError):
        FeatureNormalizer.fit([np.zeros((3, 4)), np.zeros((3, 5))])
    norm = FeatureNormalizer.fit([np.arange(8.0).reshape(4, 2)])
    with pytest.raises(ShapeError, match=r"\(\.\.\., 2\)"):
        norm(np.zeros((3, 4)))
    with pytest.raises(ConfigError, match="std"):
        FeatureNormalizer(np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(ConfigError, match="'std'"):
        FeatureNormalizer.from_dict({"mean": [0.0]})
    # A constant band does not divide by zero: std is floored at eps.
    const = FeatureNormalizer.fit([np.ones((5, 2))], eps=1e-3)
    np.testing.assert_array_equal(const.std, [1e-3, 1e-3])
