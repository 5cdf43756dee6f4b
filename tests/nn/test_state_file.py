"""save_state / load_state: a stream's state survives its process, and a bad file is refused."""

from __future__ import annotations

import pytest
import torch

import deltarnn
from deltarnn import CheckpointError, DeltaGRU, DeltaGRUCell, DeltaLSTM, ShapeError
from deltarnn import functional as F

pytest.importorskip("safetensors")


def frames(steps, batch, features, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(0.1 * torch.randn(steps, batch, features, generator=g), 0)


def make(cls, layers=2):
    torch.manual_seed(0)
    return cls(5, 7, layers, theta_x=0.05, theta_h=0.05).eval().requires_grad_(False)


def assert_states_equal(a, b):
    assert type(a) is type(b) and len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y)
        else:
            assert_states_equal(x, y)


@pytest.mark.parametrize("cls", [DeltaGRU, DeltaLSTM])
def test_a_streamer_resumed_from_a_file_goes_on_as_if_never_stopped(cls, tmp_path):
    module = make(cls)
    x = frames(20, 3, 5)
    whole = module.streamer(3)
    first = module.streamer(3)
    for f in x[:10]:
        whole.step(f)
        first.step(f)
    path = tmp_path / "session.safetensors"
    deltarnn.save_state(path, first.state())
    del first
    loaded = deltarnn.load_state(path)
    assert_states_equal(loaded, whole.state())
    resumed = module.streamer(3, loaded)
    for f in x[10:]:
        assert torch.equal(resumed.step(f), whole.step(f))
    # and stream() takes it as well
    out, _ = module.stream(x[10:11], deltarnn.load_state(path, device="cpu"))
    assert out.shape == (1, 3, 7)
    if torch.cuda.is_available():
        on_gpu = deltarnn.load_state(path, device="cuda")
        assert all(t.is_cuda for s in on_gpu for t in s)


def test_states_of_stream_fresh_states_and_cells_round_trip(tmp_path):
    module = make(DeltaLSTM, 3)
    with torch.inference_mode():  # views of one block, inference tensors: saved all the same
        _, state = module.stream(frames(4, 2, 5), None)
    fresh = module.initial_state(2)  # a 0-d since_sync, shared by every row
    cell = DeltaGRUCell(5, 7)
    _, cell_state = cell(torch.randn(5), None)
    for name, value in [("stream", state), ("fresh", fresh), ("cell", cell_state)]:
        path = tmp_path / f"{name}.safetensors"
        deltarnn.save_state(path, value)
        assert_states_equal(deltarnn.load_state(path), value)
    assert isinstance(deltarnn.load_state(tmp_path / "cell.safetensors"), F.DeltaGRUState)


def test_a_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    module = make(DeltaGRU)
    path = tmp_path / "s.safetensors"
    good = module.initial_state(1)
    deltarnn.save_state(path, good)
    before = path.read_bytes()
    with pytest.raises(ShapeError, match="one kind"):
        deltarnn.save_state(path, (good[0], make(DeltaLSTM).initial_state(1)[0]))
    with pytest.raises(ShapeError, match="must be a tensor"):
        deltarnn.save_state(path, (good[0]._replace(h=None),))
    # a state that load_state would refuse is not written
    with pytest.raises(ShapeError, match="columns"):
        deltarnn.save_state(path, (good[0]._replace(m=good[0].m[:, :3]),))
    with pytest.raises(ShapeError, match="batch"):
        deltarnn.save_state(path, (good[0], good[1]._replace(h=torch.zeros(2, 7))))
    assert path.read_bytes() == before
    # a crash after the new file was written but before it replaced the old one
    import deltarnn.tensor_files as tf

    def crash(p):
        raise OSError("disk gone")

    monkeypatch.setattr(tf, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        deltarnn.save_state(path, module.initial_state(4))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]  # no temporary left


def _rewrite(path, edit, metadata_edit=None):
    """The file at ``path`` with its tensors and metadata edited (as another writer might)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
        metadata = f.metadata()
    edit(tensors)
    if metadata_edit is not None:
        metadata_edit(metadata)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize(
    "edit, metadata_edit, match",
    [
        (lambda t: t.pop("1.m"), None, r"missing \['1.m'\]"),
        (lambda t: t.update(extra=torch.zeros(1)), None, r"unexpected \['extra'\]"),
        (lambda t: t.update({"0.h": t["0.h"].long()}), None, "2-D float"),
        (lambda t: t.update({"1.h": t["1.h"][:1]}), None, "batch"),
        (lambda t: t.update({"0.m": t["0.m"][:, :5].contiguous()}), None, "columns"),
        (lambda t: t.update({"1.since_sync": torch.zeros(3)}), None, "since_sync"),
        (lambda t: None, lambda m: m.update(kind="RNN"), "layer kind"),
        (lambda t: None, lambda m: m.update(layers="two"), "number of layers"),
        (lambda t: None, lambda m: m.update(version="9"), "version"),
        (lambda t: None, lambda m: m.pop("format"), "not a deltarnn stream state"),
    ],
)
def test_a_bad_file_is_refused_naming_it(tmp_path, edit, metadata_edit, match):
    path = tmp_path / "s.safetensors"
    deltarnn.save_state(path, make(DeltaGRU).initial_state(2))
    _rewrite(path, edit, metadata_edit)
    with pytest.raises(CheckpointError, match=match) as info:
        deltarnn.load_state(path)
    assert str(path) in str(info.value)


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        deltarnn.load_state(tmp_path / "none.safetensors")
    path = tmp_path / "s.safetensors"
    deltarnn.save_state(path, make(DeltaGRU).initial_state(1))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        deltarnn.load_state(path)
    from safetensors.torch import save_file

    save_file(make(DeltaGRU).state_dict(), str(path))  # weights, not a state
    with pytest.raises(CheckpointError, match="not a deltarnn stream state"):
        deltarnn.load_state(path)
