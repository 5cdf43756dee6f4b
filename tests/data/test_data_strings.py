"""Connected digit strings: determinism, labels against the spliced audio, split purity, cache."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from deltarnn.data import digit_strings as ds_mod
from deltarnn.data import fsdd
from deltarnn.data.collate import collate_ctc
from deltarnn.data.digit_strings import (
    DigitStringConfig,
    DigitStringDataset,
    digits_to_labels,
    labels_to_digits,
    load_digit_strings,
    plan_digit_strings,
    synthesize,
)
from deltarnn.errors import ConfigError

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def tiny_root(tmp_path):
    """An FSDD-shaped tree: 2 speakers x 10 digits x 3 takes of distinct short tones."""
    rec = tmp_path / "data" / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for s, speaker in enumerate(("ann", "bob")):
        for digit in range(10):
            for take in range(3):
                n = 400 + 40 * digit + 10 * take  # a distinct length per file
                t = np.arange(n) / 8000
                wav = 0.2 * np.sin(2 * np.pi * (300 + 100 * digit + 20 * s) * t)
                sf.write(rec / f"{digit}_{speaker}_{take}.wav", wav.astype(np.float32), 8000)
    return tmp_path / "data"


def test_label_mapping():
    assert digits_to_labels([0, 9, 5]) == [1, 10, 6]
    assert labels_to_digits(torch.tensor([1, 0, 10, 6])) == [0, 9, 5]
    with pytest.raises(ConfigError):
        digits_to_labels([10])
    with pytest.raises(ConfigError):
        labels_to_digits([11])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_digits": 0},
        {"min_digits": 3, "max_digits": 2},
        {"min_pause_ms": -1.0},
        {"min_pause_ms": 100.0, "max_pause_ms": 50.0},
        {"noise_std": -0.1},
        {"noise_std": float("nan")},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        DigitStringConfig(**kwargs)


def test_plan_is_deterministic_order_free_and_prefix_stable(tiny_root):
    recs = fsdd.list_recordings(tiny_root)
    a = plan_digit_strings(recs, 20, seed=3)
    assert a == plan_digit_strings(list(reversed(recs)), 20, seed=3)
    assert a[:7] == plan_digit_strings(recs, 7, seed=3)
    assert a != plan_digit_strings(recs, 20, seed=4)
    assert all(1 <= len(s.recordings) <= 7 for s in a)
    assert len({len(s.recordings) for s in plan_digit_strings(recs, 200, seed=0)}) == 7
    with pytest.raises(ConfigError, match="num_examples"):
        plan_digit_strings(recs, -1)
    with pytest.raises(ConfigError, match="empty"):
        plan_digit_strings([], 3)


def test_labels_match_the_spliced_recordings(tiny_root):
    recs = fsdd.list_recordings(tiny_root)
    config = DigitStringConfig(min_pause_ms=50.0, max_pause_ms=300.0, noise_std=1e-3)
    ds = DigitStringDataset(recs, 25, seed=1, config=config)
    for i in range(len(ds)):
        feats, labels = ds[i]
        plan = ds.strings[i]
        assert labels.dtype == torch.int64
        assert labels.tolist() == [r.digit + 1 for r in plan.recordings]
        assert labels_to_digits(labels) == plan.digits
        assert len({r.speaker for r in plan.recordings}) == 1  # one speaker per string
        wave, segments = ds.waveform(i)
        assert feats.shape == (1 + len(wave) // 80, 40)
        assert len(segments) == len(plan.recordings)
        for (start, stop), rec in zip(segments, plan.recordings, strict=True):
            original, _ = sf.read(rec.path, dtype="float32")
            np.testing.assert_array_equal(wave[start:stop], original)
        # Pauses: 50-300 ms of low-level noise before, between and after the digits.
        bounds = [0, *[b for seg in segments for b in seg], len(wave)]
        gaps = np.diff(bounds)[::2]
        assert np.all((gaps >= 400) & (gaps <= 2400)), gaps
        quiet = np.concatenate([wave[a:b] for a, b in zip(bounds[::2], bounds[1::2], strict=True)])
        assert 0 < quiet.std() < 3e-3


def test_frame_labels_follow_the_splice(tiny_root):
    ds = DigitStringDataset(fsdd.list_recordings(tiny_root), 6, seed=2)
    hop = round(ds.params.sample_rate * ds.params.hop_ms / 1000)
    for labels, steps, plan, i in zip(
        ds.frame_labels(), ds.lengths(), ds.strings, range(len(ds)), strict=True
    ):
        assert labels.shape == (steps,) and labels.dtype == torch.int64
        _, segments = ds.waveform(i)
        for t in range(steps):  # frame t is centred on sample t * hop
            inside = [
                c for (a, b), c in zip(segments, plan.labels, strict=True) if a <= t * hop < b
            ]
            assert labels[t] == (inside[0] if inside else 0)
        assert set(labels.tolist()) - {0} == set(plan.labels)


def test_same_seed_same_dataset_and_cache_hit(tiny_root, tmp_path, monkeypatch):
    recs = fsdd.list_recordings(tiny_root)
    a = DigitStringDataset(recs, 10, seed=7, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c" / "features").glob("*.safetensors"))) == 1

    def boom(self):
        raise AssertionError("features were recomputed despite the cache")

    monkeypatch.setattr(DigitStringDataset, "_build", boom)
    b = DigitStringDataset(recs, 10, seed=7, cache_dir=tmp_path / "c")
    for i in range(10):
        torch.testing.assert_close(a[i][0], b[i][0], rtol=0, atol=0)
        torch.testing.assert_close(a[i][1], b[i][1], rtol=0, atol=0)
    monkeypatch.undo()
    c = DigitStringDataset(recs, 10, seed=8, use_cache=False)
    assert [s.digits for s in c.strings] != [s.digits for s in a.strings]


def test_other_options(tiny_root):
    recs = fsdd.list_recordings(tiny_root)
    config = DigitStringConfig(
        min_digits=2, max_digits=2, edge_pauses=False, one_speaker=False, noise_std=0.0
    )
    plans = plan_digit_strings(recs, 40, seed=0, config=config)
    assert all(len(p.recordings) == 2 and p.pauses[0] == p.pauses[-1] == 0 for p in plans)
    assert any(len({r.speaker for r in p.recordings}) == 2 for p in plans)
    wave, segments = synthesize(plans[0], noise_std=0.0)
    assert segments[0][0] == 0 and segments[-1][1] == len(wave)
    assert np.all(wave[segments[0][1] : segments[1][0]] == 0)


def test_load_digit_strings_keeps_splits_apart(tiny_root):
    sets = load_digit_strings(
        tiny_root, split="take", test_takes=(0,), num_examples={"train": 12, "test": 6}
    )
    assert set(sets) == {"train", "test"}
    assert len(sets["train"]) == 12 and len(sets["test"]) == 6
    assert all(r.take == 0 for s in sets["test"].strings for r in s.recordings)
    assert all(r.take != 0 for s in sets["train"].strings for r in s.recordings)
    # Splits draw from independent streams: the string lengths are not copied across.
    train_lengths = [len(s.recordings) for s in sets["train"].strings[:6]]
    assert train_lengths != [len(s.recordings) for s in sets["test"].strings]
    by_speaker = load_digit_strings(
        tiny_root, split="speaker", test_speakers=("bob",), num_examples={"train": 5, "test": 5}
    )
    assert {r.speaker for s in by_speaker["test"].strings for r in s.recordings} == {"bob"}
    assert {r.speaker for s in by_speaker["train"].strings for r in s.recordings} == {"ann"}
    with pytest.raises(ConfigError, match="split"):
        load_digit_strings(tiny_root, split="nope")


def test_ctc_batch_feeds_ctc_loss(tiny_root):
    ds = DigitStringDataset(fsdd.list_recordings(tiny_root), 6, seed=0)
    feats, in_lens, targets, tgt_lens = collate_ctc([ds[i] for i in range(6)], batch_first=False)
    assert feats.shape[1] == 6 and feats.shape[0] == int(in_lens.max())
    assert int(tgt_lens.sum()) == targets.numel() and int(targets.min()) >= 1
    log_probs = torch.randn(feats.shape[0], 6, ds.num_classes).log_softmax(-1)
    loss = torch.nn.CTCLoss(blank=ds.blank)(log_probs, targets, in_lens, tgt_lens)
    assert torch.isfinite(loss)


def test_real_fsdd_strings(data_root):
    sets = load_digit_strings(data_root, num_examples={"train": 8, "test": 4}, use_cache=False)
    for name, ds in sets.items():
        for i in range(len(ds)):
            feats, labels = ds[i]
            plan = ds.strings[i]
            assert labels.tolist() == [r.digit + 1 for r in plan.recordings]
            assert all((r.take < 5) == (name == "test") for r in plan.recordings)
            assert feats.shape[1] == 40 and torch.isfinite(feats).all()
    assert ds_mod.NUM_CLASSES == 11


def test_feature_splicer_matches_the_waveform_splice_inside_the_digits(tiny_root):
    from deltarnn.data.feature_splice import FeatureSplicer
    from deltarnn.data.features import FeatureParams

    recs = fsdd.list_recordings(tiny_root)
    params = FeatureParams()  # hop 80 samples, window 200: 2 edge frames
    cfg = DigitStringConfig(max_digits=3, noise_std=1e-3)
    splicer = FeatureSplicer(recs, params, cfg)
    assert splicer.edge == 2
    # First pause a whole number of hops: the first digit's frames sit where the waveform
    # splice puts them, and its interior frames are identical.
    plan = ds_mod.DigitString((recs[5], recs[40]), (800, 400, 240), noise_seed=7)
    feats, labels = splicer.splice(plan)
    wave, segments = synthesize(plan, 8000, cfg.noise_std)
    ref = params.compute(wave)
    n0 = len(params.compute_file(recs[5].path))
    inner = slice(10 + 2, 10 + n0 - 2)  # 800 / 80 = 10 pause frames, then the digit
    np.testing.assert_allclose(feats[inner], ref[inner], rtol=0, atol=1e-5)
    assert abs(len(feats) - len(ref)) <= len(plan.recordings)
    assert labels.dtype == np.int64 and len(labels) == len(feats)
    assert set(labels[inner].tolist()) == {recs[5].digit + 1}
    assert labels[:12].tolist() == [0] * 12  # pause and the replaced edge frames are blank
    runs = [int(v) for i, v in enumerate(labels) if v and (i == 0 or labels[i - 1] != v)]
    assert runs == [recs[5].digit + 1, recs[40].digit + 1]
    # Pause frames are cut from the analysed pause noise.
    assert np.abs(feats[:10] - splicer.pause[:1].mean()).max() < 3.0


def test_feature_splicer_draws_fresh_deterministic_strings(tiny_root):
    from deltarnn.data.feature_splice import FeatureSplicer

    recs = fsdd.list_recordings(tiny_root)
    splicer = FeatureSplicer(recs, config=DigitStringConfig(max_digits=4))
    a = splicer.draw(12, seed=(0, 1))
    b = splicer.draw(12, seed=(0, 1))
    c = splicer.draw(12, seed=(0, 2))
    assert len(a) == 12 and a.strings == b.strings and a.strings != c.strings
    x, y = a[3]
    assert x.dtype == torch.float32 and x.shape == (a.lengths()[3], 40)
    assert y.tolist() == [d + 1 for d in a.strings[3].digits]
    assert all(torch.equal(p, q) for p, q in zip(a.frame_labels, b.frame_labels, strict=True))
    assert [len(f) for f in a.frame_labels] == a.lengths()
    with pytest.raises(ConfigError, match="empty"):
        FeatureSplicer([])


def test_feature_splicer_draws_digits_at_the_given_speeds(tiny_root):
    from deltarnn.data.feature_splice import FeatureSplicer

    recs = fsdd.list_recordings(tiny_root)
    plain = FeatureSplicer(recs, config=DigitStringConfig(max_digits=4))
    perturbed = FeatureSplicer(recs, config=DigitStringConfig(max_digits=4), speeds=(0.5, 2.0))
    a, b = plain.draw(30, seed=0), perturbed.draw(30, seed=0)
    assert a.strings == b.strings  # the same recipes, other digit lengths
    digit_frames = [int((y > 0).sum()) for y in a.frame_labels]
    fast_slow = [int((y > 0).sum()) for y in b.frame_labels]
    ratios = np.array(fast_slow) / np.array(digit_frames)
    assert ratios.min() < 0.8 and ratios.max() > 1.5
    with pytest.raises(ConfigError, match="speeds"):
        FeatureSplicer(recs, speeds=())


def test_feature_splicer_frame_targets(tiny_root):
    from deltarnn.data.feature_splice import FeatureSplicer

    splicer = FeatureSplicer(fsdd.list_recordings(tiny_root))
    ds = splicer.draw(5, seed=3, frame_targets=True)
    x, y = ds[2]
    assert y.shape == (x.shape[0],) and torch.equal(y, ds.frame_labels[2])
