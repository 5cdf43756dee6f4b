"""Udacity simulator steering frames: labels, temporal split, windows, frame cache, errors."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deltarnn.data import steering
from deltarnn.data.errors import DataIntegrityError, DataNotFoundError
from deltarnn.errors import ConfigError

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def mirror():
    """The real data root ($DELTARNN_DATA, else ../shared/data); skip without the frames."""
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    root = Path(os.environ.get("DELTARNN_DATA") or default)
    if not (root / steering.STEERING_DIR / steering.LABELS_FILE).is_file():
        pytest.skip(f"no udacity-sim/labels.csv under {root} (set DELTARNN_DATA)")
    return root


def _write_tree(base, sessions=(("s1", 10), ("s2", 7)), shuffle=True):
    """Frames whose red channel encodes the index, rows written out of time order."""
    sim = base / steering.STEERING_DIR
    rows = []
    for name, n in sessions:
        (sim / name).mkdir(parents=True)
        for i in range(n):
            img = np.zeros((8, 16, 3), np.uint8)
            img[..., 0] = 20 * i
            img[..., 2] = 255
            Image.fromarray(img).save(sim / name / f"f{i:03d}.jpg", quality=100)
            rows.append([name, f"f{i:03d}.jpg", f"{0.1 * i:.3f}", f"{i / 20:.3f}", "0.5", "0", "9"])
    if shuffle:
        rows = rows[::-1]
    with open(sim / steering.LABELS_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(steering.COLUMNS)
        w.writerows(rows)
    return base


def test_real_counts_and_temporal_split(mirror):
    sessions = steering.load_sessions(mirror)
    assert sum(len(s) for s in sessions) == 7495
    assert {s.name: len(s) for s in sessions} == {"2018-07-16": 4053, "2024-01-31": 3442}
    for s in sessions:
        assert np.all(np.diff(s.time_s) > 0)
        assert s.steering.min() >= -1 and s.steering.max() <= 1
    split = steering.temporal_split(sessions, train_fraction=0.8)
    assert sum(len(s) for s in split.train + split.test) == 7495
    for train, test in zip(split.train, split.test, strict=True):
        assert train.name == test.name
        assert train.time_s.max() < test.time_s.min()
        assert not set(train.frame_paths) & set(test.frame_paths)
        duration = test.time_s[-1] - train.time_s[0]
        assert train.time_s[-1] <= 0.8 * duration < test.time_s[0]


def test_real_windows(mirror, tmp_path):
    split = steering.temporal_split(steering.load_sessions(mirror))
    ds = steering.SteeringDataset(
        split.test, seq_len=8, stride=8, size=(40, 80), grayscale=True, cache_dir=tmp_path
    )
    assert len(ds) == sum(len(s) // 8 for s in split.test)
    x, y = ds[0]
    assert x.shape == (8, 1, 40, 80) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    np.testing.assert_array_equal(y.numpy(), split.test[0].steering[:8])


def test_synthetic_sessions_sorted_by_time(tmp_path):
    sessions = steering.load_sessions(_write_tree(tmp_path))
    assert [s.name for s in sessions] == ["s1", "s2"]
    s1 = sessions[0]
    assert [p.name for p in s1.frame_paths] == [f"f{i:03d}.jpg" for i in range(10)]
    np.testing.assert_allclose(s1.steering, np.arange(10) / 20, atol=1e-6)
    assert s1.time_s.dtype == np.float64 and s1.steering.dtype == np.float32


def test_synthetic_split_and_windows(tmp_path):
    root = _write_tree(tmp_path)
    split = steering.temporal_split(steering.load_sessions(root), 0.5, 0.2)
    lens = {
        (part, s.name): len(s) for part in ("train", "val", "test") for s in getattr(split, part)
    }
    # s1 spans 0-0.9 s: cuts at 0.45 s and 0.63 s.
    assert lens[("train", "s1")] == 5 and lens[("val", "s1")] == 2 and lens[("test", "s1")] == 3
    ds = steering.SteeringDataset(split.train, seq_len=3, stride=1, cache_dir=tmp_path / "c")
    assert len(ds) == (5 - 2) + (lens[("train", "s2")] - 2)
    x, y = ds[1]
    assert x.shape == (3, 3, 8, 16)
    # Red channel encodes the frame index: window 1 of s1 holds frames 1, 2, 3.
    np.testing.assert_allclose(x[:, 0].mean(dim=(1, 2)).numpy() * 255, [20, 40, 60], atol=3)
    np.testing.assert_allclose(y.numpy(), [0.05, 0.10, 0.15], atol=1e-6)
    np.testing.assert_allclose(ds.window_times(1), [0.1, 0.2, 0.3])
    small = steering.SteeringDataset(split.test, seq_len=2, size=(4, 8), grayscale=True)
    assert small[0][0].shape == (2, 1, 4, 8)
    assert len(steering.SteeringDataset(split.test, seq_len=50)) == 0


def test_frame_cache_hit_and_invalidation(tmp_path, monkeypatch):
    root = _write_tree(tmp_path)
    (s1, _) = steering.load_sessions(root)
    first = steering.load_frames(s1, cache_dir=tmp_path / "c")
    assert first.dtype == torch.uint8 and first.shape == (10, 3, 8, 16)
    assert len(list((tmp_path / "c" / "frames").glob("*.safetensors"))) == 1
    real_decode = steering._decode

    def boom(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(steering, "_decode", boom)
    torch.testing.assert_close(steering.load_frames(s1, cache_dir=tmp_path / "c"), first)
    monkeypatch.setattr(steering, "_decode", real_decode)
    Image.new("RGB", (16, 8), (255, 255, 255)).save(s1.frame_paths[0])
    changed = steering.load_frames(s1, cache_dir=tmp_path / "c")
    assert int(changed[0].min()) > 200 and torch.equal(changed[1:], first[1:])


def test_load_steering(tmp_path):
    sets = steering.load_steering(_write_tree(tmp_path), seq_len=2, use_cache=False)
    assert set(sets) == {"train", "test"}
    assert len(sets["train"]) == 8 // 2 + 5 // 2  # s1: 8 frames before 0.72 s, s2: 5 of 7
    sets = steering.load_steering(
        tmp_path,
        train_fraction=0.6,
        val_fraction=0.2,
        seq_len=1,
        stride=2,
        size=(4, 8),
        grayscale=True,
    )
    assert set(sets) == {"train", "val", "test"}
    for ds in sets.values():  # every split gets the same window and frame options
        assert (ds.seq_len, ds.stride) == (1, 2) and ds[0][0].shape == (1, 1, 4, 8)
    with pytest.raises(TypeError, match="seq_length"):
        steering.load_steering(tmp_path, seq_length=2)


def test_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="DELTARNN_DATA"):
        steering.load_sessions(tmp_path / "none")
    root = _write_tree(tmp_path / "a")
    labels = root / steering.STEERING_DIR / steering.LABELS_FILE
    text = labels.read_text()
    labels.write_text(text.replace("steering,", "angle,", 1))
    with pytest.raises(DataIntegrityError, match="missing columns"):
        steering.load_sessions(root)
    lines = text.splitlines()
    lines[2] = lines[2].replace("0.5", "fast", 1)
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataIntegrityError, match=":3: not a number"):
        steering.load_sessions(root)
    labels.write_text(text)
    (root / steering.STEERING_DIR / "s2" / "f000.jpg").unlink()
    with pytest.raises(DataIntegrityError, match="missing"):
        steering.load_sessions(root)
    sessions = steering.load_sessions(_write_tree(tmp_path / "b"))
    with pytest.raises(ConfigError):
        steering.temporal_split(sessions, 0.0)
    with pytest.raises(ConfigError):
        steering.temporal_split(sessions, 0.9, 0.2)
    with pytest.raises(ConfigError, match="seq_len"):
        steering.SteeringDataset(sessions, seq_len=0)
    with pytest.raises(ConfigError, match="size"):
        steering.load_frames(sessions[0], size=(0, 8))


def test_moving_average_is_a_centred_time_window():
    t = np.array([0.0, 0.1, 0.2, 0.5, 0.6, 2.0])
    v = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 4.0])
    out = steering.moving_average(v, t, 0.25)  # neighbours within 0.125 s
    np.testing.assert_allclose(out, [0.5, 1 / 3, 0.0, 1.0, 1.0, 4.0], atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(steering.moving_average(v, t, 0.0), v)
    wide = steering.moving_average(v, t, 10.0)
    np.testing.assert_allclose(wide, np.full(6, v.mean()), atol=1e-6)
    with pytest.raises(ConfigError, match="window_s"):
        steering.moving_average(v, t, -1.0)
    with pytest.raises(ConfigError, match="non-decreasing"):
        steering.moving_average(v, t[::-1], 0.2)
    from deltarnn.errors import ShapeError

    with pytest.raises(ShapeError, match="time_s"):
        steering.moving_average(v, t[:3], 0.2)


def test_smoothed_labels_and_cropped_frames(tmp_path):
    root = _write_tree(tmp_path)
    (s1, _) = steering.load_sessions(root)
    smooth = steering.smooth_steering(s1, 0.25)  # frames 0.1 s apart: 3-frame mean inside
    np.testing.assert_allclose(smooth.steering[1:-1], s1.steering[1:-1], atol=1e-6)  # linear
    np.testing.assert_allclose(smooth.steering[0], s1.steering[:2].mean(), atol=1e-6)
    assert smooth.frame_paths == s1.frame_paths
    np.testing.assert_allclose(s1.steering, np.arange(10) / 20, atol=1e-6)  # left unchanged
    # Rows 0-1 and 6-7 cropped away: marks them so the crop is visible.
    img = np.zeros((8, 16, 3), np.uint8)
    img[:2] = 255
    img[6:] = 255
    Image.fromarray(img).save(s1.frame_paths[0], quality=100)
    frames = steering.load_frames(s1, crop=(2, 2), cache_dir=tmp_path / "c")
    assert frames.shape == (10, 3, 4, 16) and int(frames[0].max()) < 40
    uncropped = steering.load_frames(s1, cache_dir=tmp_path / "c")
    assert uncropped.shape == (10, 3, 8, 16) and int(uncropped[0].max()) > 200
    resized = steering.load_frames(s1, size=(2, 8), crop=(2, 2), use_cache=False)
    assert resized.shape == (10, 3, 2, 8)
    with pytest.raises(ConfigError, match="crop"):
        steering.load_frames(s1, crop=(-1, 0))
    with pytest.raises(ConfigError, match="crop"):
        steering.load_frames(s1, crop=(4, 4), use_cache=False)
    sets = steering.load_steering(root, seq_len=2, use_cache=False, smooth_s=0.25, crop=(2, 2))
    assert sets["train"][0][0].shape == (2, 3, 4, 16)
    np.testing.assert_allclose(sets["train"][0][1].numpy(), smooth.steering[:2], atol=1e-6)
