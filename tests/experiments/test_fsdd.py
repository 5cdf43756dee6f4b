"""The FSDD leave-one-speaker-out script: validation selection before test, the test rows it
writes, summary.json's fields, resumption from the run folders and the tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from deltarnn.data.fsdd import FSDD_SPEAKERS
from deltarnn.errors import ConfigError
from deltarnn.train import read_rows

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def six_speakers(tmp_path):
    """Every FSDD speaker, 10 digits x 2 takes of distinct short tones."""
    rec = tmp_path / "data" / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for s, speaker in enumerate(FSDD_SPEAKERS):
        for digit in range(10):
            for take in range(2):
                n = 400 + 40 * digit + 10 * take
                t = np.arange(n) / 8000
                wav = 0.2 * np.sin(2 * np.pi * (300 + 100 * digit + 15 * s) * t)
                sf.write(rec / f"{digit}_{speaker}_{take}.wav", wav.astype(np.float32), 8000)
    return tmp_path / "data"


def _cfg(module, root, **kw):
    fields = dict(
        root=str(root),
        folds=["theo", "yweweler"],
        seeds=[0, 1],
        hidden_size=8,
        batch_size=16,
        dense_epochs=1,
        retrain_epochs=1,
        thetas=[0.2],
        retrain_thetas=[0.2],
        learnable_epochs=1,
        speeds=[1.0, 1.1],
    )
    fields.update(kw)
    return module.FSDDConfig(**fields)


def test_folds_and_config_checks(fsdd_loso):
    assert fsdd_loso.val_speaker("theo") == "yweweler"
    assert fsdd_loso.val_speaker("yweweler") == "george"
    with pytest.raises(ConfigError, match="folds"):
        fsdd_loso.FSDDConfig(folds=["ann"]).validate()
    with pytest.raises(ConfigError, match="speeds"):
        fsdd_loso.FSDDConfig(speeds=[0.9]).validate()


def test_tiny_run_selects_on_validation_then_tests_once(
    fsdd_loso, six_speakers, tmp_path, monkeypatch, protocol_outputs
):
    # An untrained tiny model is far from dense at any Θ: a wide budget lets the rule choose.
    monkeypatch.setattr(fsdd_loso, "REPORT", dataclasses.replace(fsdd_loso.REPORT, budget=1.0))
    cfg = _cfg(fsdd_loso, six_speakers)
    out, results = tmp_path / "runs", tmp_path / "exp" / "results.json"
    fsdd_loso.run_experiment(cfg, str(out), str(results))
    rows, val, test, chosen = protocol_outputs(results)
    # Test rows: dense, control, the selected configuration and the learnable run, no other.
    methods = {("dense", 0.0), ("control", 0.0), chosen, ("learnable", 0.3)}
    assert {(r.method, r.theta_x) for r in test} <= methods
    assert len(test) == 2 * 2 * len(methods)
    assert all(len(r.extra["item_num"]) == 20 for r in test)  # one speaker: 10 digits x 2
    # A second run reuses every finished stage and rewrites the same rows.
    before = {r.key: r.value for r in rows}
    fsdd_loso.run_experiment(cfg, str(out), str(results))
    assert {r.key: r.value for r in read_rows(results)} == before
    table = fsdd_loso.render_tables(
        cfg, str(results), str(tmp_path / "t.md"), str(tmp_path / "p.png")
    )
    assert "split val" in table and "per held-out speaker" in table
    assert (tmp_path / "p.png").stat().st_size > 0
