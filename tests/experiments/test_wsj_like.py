"""The WSJ-like experiment scripts: config checks and tiny end-to-end runs on synthetic digit
strings and synthetic Asterisk prompts (train, resume from the run folders, render); the digit
strings protocol script (selection on validation, test once, dense models from a second process)."""

from __future__ import annotations

import dataclasses
import gzip
import json

import numpy as np
import pytest
import soundfile as sf

from deltarnn.data import asterisk as ast
from deltarnn.errors import ConfigError, RunFolderError
from deltarnn.train import read_rows

pytestmark = pytest.mark.usefixtures("isolated_cache")


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


def test_config_validation(speech):
    with pytest.raises(ConfigError, match="task"):
        speech.SpeechConfig(task="wsj").validate()
    with pytest.raises(ConfigError, match="hidden_size"):
        speech.SpeechConfig(hidden_size=0).validate()
    with pytest.raises(ConfigError, match="thetas"):
        speech.SpeechConfig(thetas=[-0.1]).validate()


def _check_rows(rows, task, metric):
    methods = [r.method for r in rows]
    assert methods == ["dense", "converted", "delta", "delta_l1"]
    for r in rows:
        assert r.task == task and r.metric == metric
        assert r.value >= 0 and r.dense_value == rows[0].value
        assert r.ops_reduction is not None and r.ops_reduction <= r.mac_reduction
    # Θ = 0.5 sends less than Θ = 0 (which skips only exact repeats, e.g. of a steady tone)
    assert rows[0].theta_x == 0 and rows[1].theta_x == 0.5
    assert rows[1].occupancy_x < rows[0].occupancy_x
    assert rows[1].mac_reduction > rows[0].mac_reduction >= 1


def test_tiny_strings_end_to_end(speech, fsdd_root, tmp_path, tiny):
    cfg = speech.SpeechConfig(
        task="strings",
        root=str(fsdd_root),
        num_strings=8,
        max_digits=2,
        align_epochs=1,
        thetas=[0.5],
        **tiny,
    )
    results = tmp_path / "results.json"
    rows = speech.run_experiment(cfg, tmp_path / "run", results)
    _check_rows(rows, "strings", "der")
    assert read_rows(results) == rows
    for name in ("align", "dense", "delta", "delta_l1"):
        assert (tmp_path / "run" / name / "MANIFEST.json").is_file()
        history = json.loads((tmp_path / "run" / name / "metrics.json").read_text())["history"]
        assert len(history) == 1 and "val_der" not in history[0]
    # a second run reuses the finished stages and gives the same rows
    assert speech.run_experiment(cfg, tmp_path / "run", results) == rows
    # a changed training setting is refused, not mixed with the old stages
    with pytest.raises(RunFolderError, match="another config"):
        speech.run_experiment(dataclasses.replace(cfg, lr=0.01), tmp_path / "run", results)
    table, plot = tmp_path / "table.md", tmp_path / "plot.svg"
    assert speech.main(["--results", str(results), "--render", str(table), str(plot)]) == 0
    assert "| delta_l1 | 0.5 |" in table.read_text() and "<svg" in plot.read_text()


def test_tiny_asterisk_end_to_end(speech, asterisk_root, tmp_path, tiny):
    cfg = speech.SpeechConfig(
        task="asterisk",
        root=str(asterisk_root),
        test_fraction=0.3,
        val_fraction=0.3,
        thetas=[0.5],
        **tiny,
    )
    cfg = dataclasses.replace(cfg, hop_ms=20.0, win_ms=30.0)
    rows = speech.run_experiment(cfg, tmp_path / "run", tmp_path / "results.json")
    _check_rows(rows, "asterisk", "cer")
    # with a validation split: every row has its validation error, every epoch its record
    assert all(r.val_value is not None and r.dense_val_value == rows[0].val_value for r in rows)
    history = json.loads((tmp_path / "run/delta/metrics.json").read_text())["history"]
    assert {"val_cer", "val_occupancy_x", "val_occupancy_h"} <= set(history[0])


def _strings_cfg(module, root):
    return module.StringsConfig(
        root=str(root),
        seeds=[0, 1],
        max_digits=2,
        train_strings=8,
        val_strings=6,
        test_strings=5,
        num_layers=1,
        hidden_size=8,
        batch_size=4,
        align_epochs=1,
        dense_epochs=1,
        retrain_epochs=1,
        thetas=[0.2],
        retrain_thetas=[0.2],
        speeds=[1.0, 1.1],
    )


def test_strings_config_checks(strings):
    with pytest.raises(ConfigError, match="folds"):
        strings.StringsConfig(folds=[["theo", "theo"]]).validate()
    with pytest.raises(ConfigError, match="select_seeds"):
        strings.StringsConfig(seeds=[0], select_seeds=[1]).validate()
    with pytest.raises(ConfigError, match="speeds"):
        strings.StringsConfig(speeds=[0.9]).validate()


def test_tiny_strings_protocol_selects_on_validation_then_tests_once(
    strings, fsdd_root, tmp_path, monkeypatch, protocol_outputs
):
    # An untrained tiny model is far from dense at any Θ: a wide budget lets the rule choose.
    monkeypatch.setattr(strings, "REPORT", dataclasses.replace(strings.REPORT, budget=1.0))
    cfg = _strings_cfg(strings, fsdd_root)
    out, results = tmp_path / "runs", tmp_path / "exp" / "results.json"
    # A process beside the main one trains what selection does not decide, for seed 1 only.
    with pytest.raises(ConfigError, match="--prepare folds"):
        strings.prepare(cfg, str(out), ["ann"])
    strings.prepare(cfg, str(out), ["theo"])
    assert sorted(p.name for p in (out / "theo" / "seed1").iterdir() if p.is_dir()) == [
        "align",
        "control",
        "dense",
        "learnable-0.2",
    ]
    assert not (out / "yweweler").exists() and not (out / "theo" / "seed0").exists()
    strings.run_experiment(cfg, str(out), str(results))
    rows, val, test, chosen = protocol_outputs(results)
    assert {r.seed for r in val} == {0}
    methods = {("dense", 0.0), ("control", 0.0), chosen, ("learnable", 0.2)}
    assert {(r.method, r.theta_x) for r in test} == methods
    assert len(test) == 2 * 2 * len(methods)  # two folds x two seeds
    assert all(len(r.extra["item_num"]) == 5 for r in test)  # one item per test string
    # A second run reuses every finished stage and rewrites the same rows.
    before = {r.key: r.value for r in rows}
    strings.run_experiment(cfg, str(out), str(results))
    assert {r.key: r.value for r in read_rows(results)} == before
    table = strings.render_tables(
        cfg, str(results), str(tmp_path / "t.md"), str(tmp_path / "p.png")
    )
    assert "per held-out speaker" in table
    assert (tmp_path / "p.png").stat().st_size > 0
