"""``deltarnn export-c`` from a weights file and from a run folder, compiled and compared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("numba")
pytest.importorskip("safetensors")

from tests.export.helpers import assert_close, midpoint_thetas, spec_stream  # noqa: E402

import deltarnn  # noqa: E402
from deltarnn.cli.main import main  # noqa: E402
from deltarnn.export import HostBuild  # noqa: E402


def test_export_c_from_safetensors(cc, fsdd_frames, tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    lstm = deltarnn.DeltaLSTM(40, 16, 2)
    gen = torch.Generator().manual_seed(1)
    lstm.set_thresholds([midpoint_thetas(gen, 40), midpoint_thetas(gen, 16)], 0.05)
    save_file(lstm.state_dict(), str(tmp_path / "kws.safetensors"))
    out = tmp_path / "c"
    argv = ["export-c", str(tmp_path / "kws.safetensors"), "--out", str(out), "--weights", "int8"]
    assert main([*argv, "--with-main", "--prefix", "kws", "--resync-every", "64"]) == 0
    printed = capsys.readouterr().out
    assert "DeltaLSTM(40, 16, num_layers=2)" in printed and "int8" in printed
    assert "state" in printed and "B" in printed
    assert sorted(p.name for p in out.iterdir()) == ["kws.c", "kws.h", "kws_main.c"]
    assert "#define KWS_RESYNC_EVERY 64" in (out / "kws.h").read_text()
    # the memory report printed is the one in the header
    for line in printed.splitlines()[1:]:
        assert line.strip() in (out / "kws.h").read_text()
    got, sent_x, sent_h = HostBuild(out, "kws", cc=cc).run(fsdd_frames.numpy())
    ref, ref_x, ref_h, _ = spec_stream(lstm, fsdd_frames, weights="int8", resync_every=64)
    assert_close(got, ref)
    np.testing.assert_array_equal(sent_x, ref_x)
    np.testing.assert_array_equal(sent_h, ref_h)


def test_export_c_refuses_a_missing_file(tmp_path, capsys):
    # the command prints the error and exits 2
    assert main(["export-c", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "c")]) == 2
    assert "run folder or an existing .safetensors" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def _run_folder(path, data_root, **method):
    """A finished run folder as `deltarnn train` leaves it (config, final model, manifest)."""
    from deltarnn.train import RunFolder, SequenceModel, TrainConfig

    cfg = TrainConfig().with_overrides(
        [
            f'data.root="{data_root}"',
            "model.hidden_size=12",
            "model.theta_x=0.15625",
            "model.theta_h=0.05",
            *(f"method.{k}={str(v).lower()}" for k, v in method.items()),
        ]
    )
    folder = RunFolder(path, cfg.to_dict()).open()
    torch.manual_seed(0)
    model = SequenceModel(cfg.model, 40, 10)
    folder.finish(model.state_dict(), {})
    return model


def test_export_c_from_a_run_folder_averages_to_the_models_logits(
    cc, fsdd_frames, data_root, tmp_path
):
    model = _run_folder(tmp_path / "run", data_root)
    out = tmp_path / "c"
    assert main(["export-c", str(tmp_path / "run"), "--out", str(out)]) == 0
    header = (out / "model.h").read_text()
    assert "linear 12 -> 10" in header and "average `out`" in header
    assert "theta_x 0.15625 (all 40)" in header
    logits, _, _ = HostBuild(out, cc=cc).run(fsdd_frames.numpy())
    with torch.no_grad():
        x = fsdd_frames[:, None]
        ref = model(x, torch.tensor([x.shape[0]]))[0]
    # the head is linear: the mean of the per-frame outputs is the mean-pooled model's logits
    assert_close(logits.mean(0), ref)


def test_export_c_refuses_a_run_trained_with_rounding(data_root, tmp_path, capsys):
    _run_folder(tmp_path / "run", data_root, rounding=True)
    assert main(["export-c", str(tmp_path / "run"), "--out", str(tmp_path / "c")]) == 2
    assert "training transform" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
