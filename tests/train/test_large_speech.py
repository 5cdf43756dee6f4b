"""The WSJ-like experiment: the GRU stack's training paths against the spec, CTC scoring, and a
tiny end-to-end run on synthetic digit strings and synthetic Asterisk prompts."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import deltarnn
from deltarnn.data import asterisk as ast
from deltarnn.errors import ConfigError
from deltarnn.train import large_speech as ls


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTARNN_CACHE", str(tmp_path / "cache"))


def _tone(freq: float, n: int, rate: int = 8000) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def fsdd_root(tmp_path):
    """FSDD-shaped tree with the held-out speakers of the speaker split plus one more."""
    rec = tmp_path / "data" / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for s, speaker in enumerate(("ann", "theo", "yweweler")):
        for digit in range(10):
            for take in range(2):
                wav = _tone(300 + 100 * digit + 20 * s, 400 + 40 * digit + 10 * take)
                sf.write(rec / f"{digit}_{speaker}_{take}.wav", wav, 8000)
    return tmp_path / "data"


@pytest.fixture
def asterisk_root(tmp_path):
    """An Asterisk-shaped tree: 12 prompts, each a tone with a short transcript."""
    base = tmp_path / "data" / "asterisk"
    voice = base / ast.VOICE_DIR
    voice.mkdir(parents=True)
    lines = []
    for k in range(12):
        sf.write(voice / f"p{k}.wav", _tone(300 + 50 * k, 1600 + 80 * k), 8000)
        lines.append(f"p{k}: press {k}")
    doc = base / ast.TRANSCRIPT_FILE
    doc.parent.mkdir(parents=True)
    with gzip.open(doc, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return tmp_path / "data"


def _rnn(theta: float) -> deltarnn.DeltaGRU:
    torch.manual_seed(0)
    rnn = deltarnn.DeltaGRU(5, 7, 3, theta_x=theta, theta_h=theta).double()
    return rnn


def test_run_gru_dense_equals_theta_zero_module():
    rnn = _rnn(0.0)
    x = torch.randn(9, 3, 5, dtype=torch.float64)
    out, counts = ls.run_gru(rnn, x, delta=False)
    assert counts is None
    torch.testing.assert_close(out, rnn(x)[0])


def test_run_gru_delta_matches_spec_values_and_gradients():
    # Inputs on a coarse grid and Θ between grid points keep every send decision away from Θ.
    x = (torch.randint(-8, 9, (11, 2, 5)) / 4).double().requires_grad_()
    rnn = _rnn(0.3)
    out, counts = ls.run_gru(rnn, x, delta=True, count=True)
    ref, _, ref_counts = rnn.stream(x, count=True)
    torch.testing.assert_close(out, ref)
    for c, r in zip(counts, ref_counts, strict=True):
        assert torch.equal(c.nx, r.nx) and torch.equal(c.nh, r.nh)
    loss = out.square().sum() + sum(c.abs_h.sum() for c in counts)
    grads = torch.autograd.grad(loss, [x, *rnn.parameters()])
    spec = _rnn(0.3)
    ref, _, ref_counts = spec.stream(x, count=True)
    ref_loss = ref.square().sum() + sum(c.abs_h.sum() for c in ref_counts)
    ref_grads = torch.autograd.grad(ref_loss, [x, *spec.parameters()])
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)


def test_run_gru_count_needs_delta():
    with pytest.raises(ConfigError, match="count"):
        ls.run_gru(_rnn(0.0), torch.zeros(2, 1, 5, dtype=torch.float64), delta=False, count=True)


def test_config_validation():
    with pytest.raises(ConfigError, match="task"):
        ls.SpeechConfig(task="wsj").validate()
    with pytest.raises(ConfigError, match="hidden_size"):
        ls.SpeechConfig(hidden_size=0).validate()
    with pytest.raises(ConfigError, match="thetas"):
        ls.SpeechConfig(thetas=[-0.1]).validate()


def _check_rows(rows, task, metric):
    methods = [r["method"] for r in rows]
    assert methods == ["dense", "converted", "delta", "delta_l1"]
    keys = {"task", "split", "method", "theta_x", "theta_h", "seed", "metric", "value"}
    keys |= {"dense_value", "mac_reduction", "byte_reduction", "occupancy_x", "occupancy_h"}
    for r in rows:
        assert set(r) == keys and r["task"] == task and r["metric"] == metric
        assert r["value"] >= 0 and r["dense_value"] == rows[0]["value"]
    # Θ = 0.5 sends less than Θ = 0 (which skips only exact repeats, e.g. of a steady tone)
    assert rows[0]["theta_x"] == 0 and rows[1]["theta_x"] == 0.5
    assert rows[1]["occupancy_x"] < rows[0]["occupancy_x"]
    assert rows[1]["mac_reduction"] > rows[0]["mac_reduction"] >= 1


def test_tiny_strings_end_to_end(fsdd_root, tmp_path):
    cfg = ls.SpeechConfig(
        task="strings",
        root=str(fsdd_root),
        num_strings=8,
        max_digits=2,
        hidden_size=8,
        batch_size=4,
        dense_epochs=1,
        retrain_epochs=1,
        thetas=[0.5],
    )
    results = tmp_path / "results.json"
    rows = ls.run_experiment(cfg, tmp_path / "run", results)
    _check_rows(rows, "strings", "der")
    assert json.loads(results.read_text()) == rows
    for name in ("dense", "delta", "delta_l1"):
        assert (tmp_path / "run" / f"{name}.safetensors").is_file()
    # resuming reuses the weights and gives the same rows
    assert ls.run_experiment(cfg, tmp_path / "run", results) == rows
    table, plot = tmp_path / "table.md", tmp_path / "plot.png"
    assert ls.main(["--results", str(results), "--render", str(table), str(plot)]) == 0
    assert "| delta_l1 | 0.5 |" in table.read_text() and plot.stat().st_size > 1000


def test_tiny_asterisk_end_to_end(asterisk_root, tmp_path):
    cfg = ls.SpeechConfig(
        task="asterisk",
        root=str(asterisk_root),
        test_fraction=0.3,
        hop_ms=20.0,
        win_ms=30.0,
        hidden_size=8,
        batch_size=4,
        dense_epochs=1,
        retrain_epochs=1,
        thetas=[0.5],
    )
    rows = ls.run_experiment(cfg, tmp_path / "run", tmp_path / "results.json")
    _check_rows(rows, "asterisk", "cer")
