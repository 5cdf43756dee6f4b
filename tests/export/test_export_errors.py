"""Models the C step cannot reproduce are refused with a clear error, before anything is written;
and a failed export leaves the output folder as it was."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import deltarnn
from deltarnn.errors import ConfigError, DTypeError, ShapeError, ThresholdError
from deltarnn.export import c_export, export_c, memory_report, read_model
from deltarnn.export.state_dict import RNNWithHead, module_from_state_dict


def gru(layers=2, hidden=8) -> deltarnn.DeltaGRU:
    torch.manual_seed(0)
    return deltarnn.DeltaGRU(6, hidden, layers, theta_x=0.1, theta_h=0.1)


def _replace(module, name, value):
    setattr(module, name, nn.Parameter(value))
    return module


def _set_buffer(module, name, value):
    module.register_buffer(name, value)
    return module


def _with_transform(module):
    module.set_transforms(x_transform=lambda x, layer: x)
    return module


def _with_head(module, head):
    return RNNWithHead(module, head)


def _bad_weight(value: float):
    m = gru()
    with torch.no_grad():
        m.weight_hh_l1[3, 2] = value
    return m


BAD_MODELS = {
    "torch GRU": (lambda: nn.GRU(6, 8), ConfigError, "from_torch"),
    "bidirectional torch LSTM": (
        lambda: nn.LSTM(6, 8, bidirectional=True),
        ConfigError,
        "from_torch",
    ),
    "bidirectional flag": (
        lambda: _setattr(gru(), "bidirectional", True),
        ConfigError,
        "bidirectional",
    ),
    "proj_size flag": (lambda: _setattr(gru(), "proj_size", 4), ConfigError, "proj_size"),
    "transform attached": (lambda: _with_transform(gru()), ConfigError, "transform"),
    "deterministic (float64 inside)": (
        lambda: _setattr(gru(), "deterministic", True),
        ConfigError,
        "deterministic=True",
    ),
    "weight of the wrong shape": (
        lambda: _replace(gru(), "weight_hh_l1", torch.zeros(24, 7)),
        ShapeError,
        r"weight_hh_l1 must have shape \(24, 8\)",
    ),
    "bias of the wrong shape": (
        lambda: _replace(gru(), "bias_ih_l0", torch.zeros(23)),
        ShapeError,
        "bias_ih_l0",
    ),
    "NaN weight": (lambda: _bad_weight(math.nan), ConfigError, "weight_hh_l1 holds 1 non-finite"),
    "inf weight": (lambda: _bad_weight(math.inf), ConfigError, "non-finite"),
    "float64": (lambda: gru().double(), DTypeError, "float32"),
    "NaN threshold": (
        lambda: _set_buffer(gru(), "theta_h_l1", torch.tensor(math.nan)),
        ThresholdError,
        "theta_h_l1 must be finite",
    ),
    "negative threshold": (
        lambda: _set_buffer(gru(), "theta_x_l0", -torch.ones(6)),
        ThresholdError,
        "theta_x_l0",
    ),
    "threshold of the wrong shape": (
        lambda: _set_buffer(gru(), "theta_x_l1", torch.ones(5)),
        ThresholdError,
        r"theta_x_l1 must be a scalar or of shape \(8,\)",
    ),
    "threshold beyond float32": (
        lambda: _set_buffer(gru(), "theta_x_l0", torch.tensor(1e300, dtype=torch.float64)),
        ThresholdError,
        "float32's range",
    ),
    "head of the wrong size": (lambda: _with_head(gru(), nn.Linear(7, 3)), ShapeError, "head"),
    "head that is not linear": (
        lambda: _with_head(gru(), nn.Sequential(nn.Linear(8, 3))),
        ConfigError,
        "nn.Linear",
    ),
    "NaN in the head": (
        lambda: _with_head(gru(), _nan_linear()),
        ConfigError,
        "head.weight holds",
    ),
}


def _setattr(module, name, value):
    setattr(module, name, value)
    return module


def _nan_linear():
    head = nn.Linear(8, 3)
    with torch.no_grad():
        head.weight[0, 0] = math.nan
    return head


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_unsupported_model_is_refused_and_nothing_is_written(tmp_path, case):
    make, error, message = BAD_MODELS[case]
    module = make()
    fresh = tmp_path / "fresh"
    with pytest.raises(error, match=message):
        export_c(module, fresh, with_main=True)
    assert not fresh.exists()
    # an existing folder, holding an earlier export, is left exactly as it was
    kept = tmp_path / "kept"
    export_c(gru(1), kept)
    (kept / "notes.txt").write_text("mine")
    before = _snapshot(kept)
    with pytest.raises(error, match=message):
        export_c(module, kept, weights="int8")
    assert _snapshot(kept) == before
    # and no temporary folder is left behind, beside or inside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert sorted(p.name for p in kept.iterdir()) == ["model.c", "model.h", "notes.txt"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weights": "int4"}, "weights must be one of"),
        ({"gates": "exact"}, "gates must be one of"),
        ({"prefix": "2fast"}, "prefix must be a C identifier"),
        ({"prefix": "static"}, "prefix must be a C identifier"),
        ({"prefix": "a-b"}, "prefix must be a C identifier"),
    ],
)
def test_bad_arguments_are_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        export_c(gru(), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        export_c(gru(), tmp_path / "out")


@pytest.mark.parametrize("existing", [False, True])
def test_a_write_that_fails_midway_leaves_nothing(tmp_path, monkeypatch, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "model.h").write_text("old")
    writes = []
    real = Path.write_text

    def failing(self, text, *args, **kwargs):
        writes.append(self.name)
        if len(writes) == 2:
            raise OSError("disk full")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(OSError, match="disk full"):
        c_export.export_c(gru(), out, with_main=True)
    monkeypatch.undo()
    assert writes[:1] == ["model.h"]  # the first file had been written (in the temporary folder)
    if existing:
        assert _snapshot(out) == {"model.h": b"old"}
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])


def test_the_head_comment_says_how_the_trained_model_uses_it(tmp_path):
    from deltarnn.train import ModelConfig, SequenceModel

    cases = {
        "average `out` over them": SequenceModel(ModelConfig(hidden_size=8, num_layers=1), 6, 4),
        "log_softmax": SequenceModel(ModelConfig(hidden_size=8), 6, 4, per_frame=True),
        "used as they are": SequenceModel(
            ModelConfig(hidden_size=8), 6, 1, per_frame=True, regression=True
        ),
    }
    for k, (words, model) in enumerate(cases.items()):
        assert words in export_c(model, tmp_path / str(k)).header.read_text()


def test_rounding_method_on_a_trained_model_is_a_transform():
    from deltarnn.train import MethodConfig, ModelConfig, SequenceModel

    model = SequenceModel(ModelConfig(hidden_size=8, num_layers=1), 6, 4)
    read_model(model)  # no method: exportable
    model.apply_method(MethodConfig(rounding=True))
    with pytest.raises(ConfigError, match="training transform"):
        read_model(model)


# -- state_dict files ------------------------------------------------------------------------


def test_state_dict_round_trip_rebuilds_the_module():
    m = gru(3, 8)
    m.set_thresholds([torch.full((6,), 0.2), 0.1, 0.3], 0.05)
    rebuilt = module_from_state_dict(m.state_dict())
    assert type(rebuilt) is deltarnn.DeltaGRU and rebuilt.num_layers == 3
    for k in range(3):
        for a, b in zip(rebuilt.thresholds(k), m.thresholds(k), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(rebuilt.layer_weights(k), m.layer_weights(k), strict=True):
            assert torch.equal(a, b)
    cell = module_from_state_dict(deltarnn.DeltaLSTMCell(5, 3, bias=False).state_dict())
    assert type(cell) is deltarnn.DeltaLSTMCell and not cell.bias
    with_head = module_from_state_dict(
        {**{f"rnn.{k}": v for k, v in m.state_dict().items()}, "head.weight": torch.zeros(4, 8)}
    )
    assert with_head.head.out_features == 4 and with_head.head.bias is None


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: nn.GRU(6, 8, bidirectional=True).state_dict(), ConfigError, "bidirectional"),
        (lambda: nn.LSTM(6, 8, proj_size=4).state_dict(), ConfigError, "projections"),
        (lambda: {**gru().state_dict(), "extra": torch.zeros(2)}, ConfigError, "unexpected"),
        (
            lambda: {k: v for k, v in gru().state_dict().items() if k != "bias_hh_l1"},
            ConfigError,
            "missing",
        ),
        (lambda: {**gru().state_dict(), "weight_hh_l0": torch.zeros(20, 8)}, ShapeError, "3H"),
        (
            lambda: {**gru().state_dict(), "weight_ih_l1": torch.zeros(24, 5)},
            ShapeError,
            "size mismatch",
        ),
        (
            lambda: {**gru().state_dict(), "weight_ih_l0": torch.zeros(24, 6, dtype=torch.int32)},
            DTypeError,
            "weight_ih_l0 must be float32",
        ),
        (
            lambda: {**gru().state_dict(), "theta_h_l1": torch.tensor(-1.0)},
            ThresholdError,
            "theta_h",
        ),
        (
            lambda: {k: v for k, v in gru().state_dict().items() if k != "theta_x_l1"},
            ConfigError,
            "not all",
        ),
        (lambda: {"head.weight": torch.zeros(3, 8)}, ShapeError, "weight_ih_l0"),
    ],
)
def test_bad_state_dicts_are_refused(make, error, message):
    with pytest.raises(error, match=message):
        module_from_state_dict(make(), "model.safetensors")


# -- memory report ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_memory_report_counts_every_array(kind):
    torch.manual_seed(0)
    cls = deltarnn.DeltaGRU if kind == "GRU" else deltarnn.DeltaLSTM
    rnn = cls(40, 64, 2)
    gates = 3 if kind == "GRU" else 4
    dense = 4 * gates * 64 * (40 + 64 + 64 + 64)
    head = RNNWithHead(rnn, nn.Linear(64, 10))
    f32 = memory_report(read_model(head))
    i8 = memory_report(read_model(head, weights="int8"))
    assert f32.weights == f32.float32_weights == i8.float32_weights == dense
    assert i8.weights * 4 == dense and i8.scales == 4 * (40 + 64 + 64 + 64) and f32.scales == 0
    assert f32.head == i8.head == 4 * (64 * 10 + 10)
    assert f32.constants == 4 * 2 * (4 * 64) + 4 * (40 + 64 + 64 + 64)  # memories, thresholds
    cell = 64 if kind == "LSTM" else 0
    assert f32.state_floats == (64 + cell + 40 + 64 + 256) + (64 + cell + 64 + 64 + 256)
    assert f32.state_counters == 7 and f32.state_bytes(4) == 4 * f32.state_floats + 28
    assert any(line.startswith("state") for line in f32.lines())
    assert f32.to_dict()["read_only"] == f32.weights + f32.head + f32.constants
