"""Every bad argument gets a specific exception that names it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import deltarnn
from deltarnn.errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    DeviceError,
    DTypeError,
    ShapeError,
    ThresholdError,
)


@pytest.fixture
def gru():
    return deltarnn.DeltaGRU(4, 6, num_layers=2)


def test_wrong_rank(gru):
    with pytest.raises(ShapeError, match="input must be 2-D"):
        gru(torch.randn(2, 3, 4, 5))
    with pytest.raises(ShapeError, match="input must be 2-D"):
        gru(torch.randn(4))


def test_wrong_feature_size(gru):
    with pytest.raises(ShapeError, match="input_size=4"):
        gru(torch.randn(5, 2, 3))


def test_h0_shape(gru):
    with pytest.raises(ShapeError, match=r"hx must have shape \(2, 3, 6\)"):
        gru(torch.randn(5, 3, 4), torch.randn(1, 3, 6))
    with pytest.raises(ShapeError, match=r"hx must have shape \(2, 6\)"):
        gru(torch.randn(5, 4), torch.randn(2, 1, 6))
    lstm = deltarnn.DeltaLSTM(4, 6)
    with pytest.raises(ShapeError, match="tuple"):
        lstm(torch.randn(5, 1, 4), torch.randn(1, 1, 6))
    with pytest.raises(ShapeError, match="c_0 must have shape"):
        lstm(torch.randn(5, 1, 4), (torch.zeros(1, 1, 6), torch.zeros(1, 2, 6)))


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_bad_threshold_value(bad):
    with pytest.raises(ThresholdError, match="theta_x must be finite and >= 0"):
        deltarnn.DeltaGRU(4, 6, theta_x=bad)
    with pytest.raises(ThresholdError, match="theta_h"):
        deltarnn.DeltaLSTM(4, 6, theta_h=torch.tensor([0.1, 0.1, 0.1, bad, 0.1, 0.1]))


def test_bad_threshold_shape_and_type():
    with pytest.raises(ThresholdError, match=r"shape \(4,\)"):
        deltarnn.DeltaGRU(4, 6, theta_x=torch.zeros(5))
    with pytest.raises(ThresholdError, match="num_layers=2 entries"):
        deltarnn.DeltaGRU(4, 6, num_layers=2, theta_h=[0.1, 0.2, 0.3])
    with pytest.raises(ThresholdError, match="float or a tensor"):
        deltarnn.DeltaGRU(4, 6, theta_x="0.1")
    with pytest.raises(ThresholdError, match="floating-point"):
        deltarnn.DeltaGRU(4, 6, theta_x=torch.tensor([1, 2, 3, 4]))


def test_dtype_mismatch(gru):
    with pytest.raises(DTypeError, match="input has dtype torch.float64"):
        gru(torch.randn(5, 2, 4, dtype=torch.float64))
    with pytest.raises(DTypeError, match="hx has dtype"):
        gru(torch.randn(5, 2, 4), torch.zeros(2, 2, 6, dtype=torch.float64))


def test_device_mismatch(gru):
    with pytest.raises(DeviceError, match="input is on meta"):
        gru(torch.empty(5, 2, 4, device="meta"))


def test_bidirectional_and_projection_rejected():
    with pytest.raises(ConfigError, match="bidirectional"):
        deltarnn.DeltaGRU(4, 6, bidirectional=True)
    with pytest.raises(ConfigError, match="bidirectional"):
        deltarnn.from_torch(torch.nn.GRU(4, 6, bidirectional=True))
    with pytest.raises(ConfigError, match="proj_size"):
        deltarnn.DeltaLSTM(4, 6, proj_size=2)
    with pytest.raises(ConfigError, match="proj_size"):
        deltarnn.from_torch(torch.nn.LSTM(4, 6, proj_size=2))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"input_size": 0}, "input_size must be a positive int"),
        ({"hidden_size": 2.5}, "hidden_size must be a positive int"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout": 1.5}, "dropout must be a number in"),
    ],
)
def test_bad_sizes(kwargs, match):
    args = {"input_size": 4, "hidden_size": 6, **kwargs}
    with pytest.raises(ConfigError, match=match):
        deltarnn.DeltaGRU(**args)


def test_bad_state(gru):
    x = torch.randn(5, 2, 4)
    _, state = gru.stream(x)
    with pytest.raises(ShapeError, match="tuple of num_layers=2"):
        gru.stream(x, state[:1])
    with pytest.raises(ShapeError, match=r"state\[0\].h must have shape \(3, 6\)"):
        gru.stream(torch.randn(5, 3, 4), state)  # state of batch 2 for a batch of 3
    with pytest.raises(ShapeError, match=r"state\[1\] must be a DeltaGRUState"):
        gru.stream(x, (state[0], torch.zeros(2, 6)))
    bad_memory = state[1]._replace(m=torch.zeros(2, 18))
    with pytest.raises(ShapeError, match=r"state\[1\].m must have shape \(2, 24\)"):
        gru.stream(x, (state[0], bad_memory))


def test_cell_errors():
    cell = deltarnn.DeltaGRUCell(4, 6)
    with pytest.raises(ShapeError, match="input must be 1-D"):
        cell(torch.randn(2, 3, 4))
    with pytest.raises(ShapeError, match="input_size=4"):
        cell(torch.randn(2, 5))
    with pytest.raises(ShapeError, match=r"hx must have shape \(2, 6\)"):
        cell(torch.randn(2, 4), torch.randn(3, 6))


def test_backend_errors():
    with pytest.raises(BackendError, match="backend must be one of"):
        deltarnn.DeltaGRU(4, 6, backend="fpga")(torch.randn(3, 1, 4))
    model = deltarnn.DeltaGRU(4, 6, backend="reference")
    model.set_transforms(h_transform=lambda h, layer: torch.round(h))
    model(torch.randn(3, 1, 4))  # the reference backend applies transforms
    model.backend = "cpu"
    with pytest.raises((ConfigError, BackendError)):
        model(torch.randn(3, 1, 4))


def test_conversion_errors():
    with pytest.raises(ConfigError, match="nn.GRU, nn.LSTM"):
        deltarnn.from_torch(torch.nn.RNN(3, 4))
    with pytest.raises(ConfigError, match="DeltaGRU"):
        deltarnn.to_torch(torch.nn.GRU(3, 4))


@pytest.mark.parametrize(
    "theta", [np.float32(0.25), np.float64(0.25), np.int64(0), torch.tensor(0.25, dtype=torch.half)]
)
def test_numpy_and_torch_real_scalar_thresholds_accepted(theta):
    model = deltarnn.DeltaGRU(4, 6, theta_x=theta, theta_h=theta)
    assert float(model.theta_x_l0) == float(theta)
    assert model.theta_h_l0.dtype == model.weight_ih_l0.dtype


@pytest.mark.parametrize("theta", [True, np.bool_(False)])
def test_bool_threshold_rejected(theta):
    with pytest.raises(ThresholdError, match="theta_x must be a float or a tensor, got .*bool"):
        deltarnn.DeltaGRU(4, 6, theta_x=theta)


def test_threshold_requiring_grad_is_an_error_not_detached():
    theta = torch.tensor(0.1, requires_grad=True)
    with pytest.raises(
        ThresholdError, match="theta_h has requires_grad=True.*LearnableDeltaEncoder"
    ):
        deltarnn.DeltaGRU(4, 6, theta_h=theta)
    deltarnn.DeltaGRU(4, 6, theta_h=theta.detach())  # the fix the message names


def test_meta_threshold_rejected():
    with pytest.raises(ThresholdError, match="theta_x is a meta tensor"):
        deltarnn.DeltaGRU(4, 6, theta_x=torch.empty(4, device="meta"))


def test_threshold_overflowing_float32_rejected():
    with pytest.raises(ThresholdError, match=r"theta_x \(1e\+308\) overflows torch.float32"):
        deltarnn.DeltaGRU(4, 6, theta_x=1e308)
    big = torch.tensor([0.0, 1e300, 0.0, 0.0], dtype=torch.float64)
    with pytest.raises(ThresholdError, match=r"\[1\] = 1e\+300\) overflows torch.float32"):
        deltarnn.DeltaGRU(4, 6, theta_x=big)
    model = deltarnn.DeltaGRU(4, 6, theta_x=1e308, dtype=torch.float64)  # finite in float64
    assert float(model.theta_x_l0) == 1e308


def test_bad_threshold_tensor_names_the_entry():
    with pytest.raises(ThresholdError, match=r"theta_x must be finite and >= 0.*\[2\] = -0.5"):
        deltarnn.DeltaGRU(4, 6, theta_x=torch.tensor([0.1, 0.1, -0.5, 0.1]))


def test_unknown_backend_rejected_at_construction():
    with pytest.raises(BackendError, match="backend must be one of 'auto'.*got 'bogus'"):
        deltarnn.DeltaGRU(4, 6, backend="bogus")
    with pytest.raises(BackendError, match="backend must be a string, got int"):
        deltarnn.DeltaLSTMCell(4, 6, backend=1)


def test_cpu_backend_in_grad_mode_says_how_to_fix_it():
    pytest.importorskip("numba")
    model = deltarnn.DeltaGRU(4, 6, backend="cpu")
    x = torch.randn(3, 1, 4)
    with pytest.raises(BackendError, match=r"torch.no_grad\(\).*requires_grad_\(False\)"):
        model(x)
    with torch.no_grad():
        model(x)
    model.requires_grad_(False)
    model(x)


def test_mixed_dtype_parameters_named():
    model = deltarnn.DeltaGRU(4, 6)
    model.weight_hh_l0.data = model.weight_hh_l0.data.double()
    with pytest.raises(DTypeError, match="weight_hh_l0 has dtype torch.float64 but weight_ih_l0"):
        model(torch.randn(3, 1, 4))


def _two_layer_state_dict():
    return deltarnn.DeltaGRU(4, 6, num_layers=2, theta_x=0.1, theta_h=0.2).state_dict()


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("theta_x_l0", torch.tensor(math.nan), "theta_x_l0 must be finite and >= 0.*nan"),
        ("theta_h_l1", torch.tensor(-0.5), "theta_h_l1 must be finite and >= 0.*-0.5"),
        ("theta_h_l1", torch.zeros(5), r"theta_h_l1 must be a scalar or of shape \(6,\)"),
        ("theta_x_l1", torch.ones(6, dtype=torch.int32), "theta_x_l1 must be a floating-point"),
    ],
)
def test_bad_thresholds_in_state_dict_rejected(key, value, match):
    state = _two_layer_state_dict()
    state[key] = value
    model = deltarnn.DeltaGRU(4, 6, num_layers=2)
    with pytest.raises(ThresholdError, match=match):
        model.load_state_dict(state)
    with pytest.raises(ThresholdError, match=match):  # strict=False checks values too
        model.load_state_dict(state, strict=False)


def test_bad_thresholds_in_safetensors_file_rejected(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    state = _two_layer_state_dict()
    state["theta_h_l0"] = torch.tensor(math.nan)
    safetensors.save_file(state, str(tmp_path / "model.safetensors"))
    model = deltarnn.DeltaGRU(4, 6, num_layers=2)
    with pytest.raises(ThresholdError, match="theta_h_l0"):
        model.load_state_dict(safetensors.load_file(str(tmp_path / "model.safetensors")))


def test_per_feature_thresholds_load_into_scalar_ones():
    state = _two_layer_state_dict()
    state["theta_h_l1"] = torch.linspace(0.1, 0.6, 6)
    model = deltarnn.DeltaGRU(4, 6, num_layers=2)  # scalar thresholds
    model.load_state_dict(state)
    assert torch.equal(model.theta_h_l1, torch.linspace(0.1, 0.6, 6))
    assert torch.equal(model.thresholds(1)[1], torch.linspace(0.1, 0.6, 6))


def test_int_weights_in_state_dict_rejected_not_cast():
    state = _two_layer_state_dict()
    state["weight_hh_l1"] = state["weight_hh_l1"].to(torch.int32)
    with pytest.raises(CheckpointError, match="weight_hh_l1 has dtype torch.int32"):
        deltarnn.DeltaGRU(4, 6, num_layers=2).load_state_dict(state)


def test_wrong_weight_shape_in_state_dict_named():
    state = _two_layer_state_dict()
    with pytest.raises(
        CheckpointError, match=r"size mismatch for weight_ih_l0: shape \(18, 4\).*needs \(18, 5\)"
    ):
        deltarnn.DeltaGRU(5, 6, num_layers=2).load_state_dict(state)


def test_missing_and_extra_state_dict_keys_listed():
    state = _two_layer_state_dict()
    with pytest.raises(CheckpointError, match=r"unexpected keys \['weight_ih_l1'"):
        deltarnn.DeltaGRU(4, 6).load_state_dict(state)
    with pytest.raises(CheckpointError, match=r"missing keys \['weight_ih_l2'"):
        deltarnn.DeltaGRU(4, 6, num_layers=3).load_state_dict(state)
    result = deltarnn.DeltaGRU(4, 6).load_state_dict(state, strict=False)
    assert "weight_ih_l1" in result.unexpected_keys
    # a torch state_dict (no thresholds) still loads strictly
    deltarnn.DeltaGRU(4, 6, num_layers=2).load_state_dict(torch.nn.GRU(4, 6, 2).state_dict())
