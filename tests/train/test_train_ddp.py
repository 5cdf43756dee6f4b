"""Two processes (gloo, CPU) over a global batch compute what one process computes."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from deltarnn.train import TrainConfig, train
from deltarnn.train.checkpoint import load_weights
from deltarnn.train.runner import build_model


def _config() -> TrainConfig:
    # Dense forward with the L1 cost on the deltas (the counts path, reference backend). With a
    # threshold, summation-order differences of 1e-7 between the runs can flip a send mask bit,
    # which is a real difference in the function, not a data-parallel error.
    return TrainConfig.from_dict(
        {
            "model": {"hidden_size": 8, "num_layers": 2},
            "method": {"l1_x": 0.01, "l1_h": 0.02},
            "data": {"batch_size": 8},
            "optim": {"lr": 0.01},
            "epochs": 2,
            "seed": 5,
        }
    )


def _worker(rank: int, world: int, port: int, out: str, data) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    try:
        train(_config(), out, progress=False, evaluate_at_end=False, device="cpu", data=data)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_gloo_processes_equal_one_process(tmp_path, sequence_data):
    data = sequence_data()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), data), nprocs=2, join=True)
    single = train(
        _config(),
        tmp_path / "single",
        progress=False,
        evaluate_at_end=False,
        device="cpu",
        data=data,
    )
    assert len(single["history"]) == 2
    a = load_weights(tmp_path / "single/model.safetensors")
    b = load_weights(tmp_path / "ddp/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        # float32 sums in another order, amplified a little by Adam over 12 steps: ~1e-6
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=2e-5, msg=k)
    # and training did move the weights away from the seeded initialisation
    init = build_model(_config(), data, "cpu").state_dict()
    assert (a["rnn.weight_hh_l0"] - init["rnn.weight_hh_l0"]).abs().max() > 1e-2
