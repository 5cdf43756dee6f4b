"""Run folders under random damage: a resume either refuses with RunFolderError (naming what is
wrong) or continues to exactly the weights of an uninterrupted run. Never another exception,
never other weights.

Damage: truncating a file, flipping one bit, swapping two files, deleting one, rewriting the
config, a stray temporary or manifest-less checkpoint folder. The runs are tiny (a one-layer
delta GRU on synthetic sequences through :func:`deltarnn.train.fit`), so each example takes a
fraction of a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deltarnn import DeltaGRU
from deltarnn.errors import RunFolderError
from deltarnn.train import Batch, Loss, ModelOutput, RunFolder, Schedule, fit, run_rnn

CONFIG = {"task": "fuzz", "lr": 0.02}
FILES = (
    "model.safetensors",
    "optimizer.safetensors",
    "optimizer.json",
    "state.json",
    "MANIFEST.json",
)


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = DeltaGRU(3, 4, theta_x=0.05, theta_h=0.05)
        self.head = torch.nn.Linear(4, 1)

    def run(self, x, lengths=None, count=False):
        out, counts = run_rnn(self.rnn, x, count=count)
        return ModelOutput(self.head(out).squeeze(-1), counts, out.new_zeros(()))


def _batches(epoch: int) -> list[Batch]:
    g = torch.Generator().manual_seed(epoch)
    x = torch.randn(6, 4, 3, generator=g)
    return [Batch(x[:, i : i + 2], torch.full((2,), 6), x[:, i : i + 2, 0]) for i in (0, 2)]


def _loss(model: _Tiny, batch: Batch) -> Loss:
    se = ((model.run(batch.x).y - batch.target) ** 2).sum()
    return Loss(se / batch.frames, float(se.detach()), batch.frames)


def _fit(run: Path, stop: int | None = None, config=CONFIG) -> _Tiny:
    model = _Tiny()
    folder = RunFolder(run, config).open()
    schedule = Schedule(epochs=3, lr=0.02, theta_warmup_epochs=1.0)
    fit(model, _batches, _loss, schedule=schedule, checkpoint=folder, progress=False,
        stop_after_epochs=stop)  # fmt: skip
    return model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run's final weights, and a run folder interrupted after epoch 2."""
    base = tmp_path_factory.mktemp("runs")
    full = _fit(base / "full").state_dict()
    _fit(base / "part", stop=2)
    return full, base / "part"


_DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(0.0, 0.99)),
    st.tuples(st.just("flip"), st.sampled_from(FILES), st.integers(0, 2**31 - 1)),
    st.tuples(st.just("swap"), st.sampled_from(FILES), st.sampled_from(FILES)),
    st.tuples(st.just("delete"), st.sampled_from(FILES), st.just(0)),
    st.tuples(st.just("config"), st.sampled_from(["lr", "task", "extra"]), st.just(0)),
    st.tuples(st.just("stray"), st.sampled_from([".ckpt-tmp", "ckpt-000003"]), st.just(0)),
)


def _damage(run: Path, kind: str, a, b) -> None:
    ckpt = run / "ckpt-000002"
    if kind == "truncate":
        raw = (ckpt / a).read_bytes()
        (ckpt / a).write_bytes(raw[: int(b * len(raw))])
    elif kind == "flip":
        raw = bytearray((ckpt / a).read_bytes())
        bit = b % (8 * len(raw))
        raw[bit // 8] ^= 1 << (bit % 8)
        (ckpt / a).write_bytes(bytes(raw))
    elif kind == "swap":
        x, y = (ckpt / a).read_bytes(), (ckpt / b).read_bytes()
        (ckpt / a).write_bytes(y)
        (ckpt / b).write_bytes(x)
    elif kind == "delete":
        (ckpt / a).unlink()
    elif kind == "config":
        config = json.loads((run / "config.json").read_text())
        config[a] = "changed"
        (run / "config.json").write_text(json.dumps(config))
    else:  # a crash left a folder behind: partial files, no manifest
        (run / a).mkdir()
        (run / a / "model.safetensors").write_bytes(b"\x00" * 16)


@settings(max_examples=25, deadline=None)
@given(damage=_DAMAGE)
def test_damaged_run_folder_is_refused_or_resumes_exactly(runs, tmp_path_factory, damage):
    full, part = runs
    run = tmp_path_factory.mktemp("case") / "run"
    shutil.copytree(part, run)
    _damage(run, *damage)
    try:
        model = _fit(run)
    except RunFolderError:
        return  # refused, naming the problem
    resumed = model.state_dict()
    assert resumed.keys() == full.keys()
    for k in full:
        assert torch.equal(resumed[k], full[k]), (damage, k)
