"""Two processes (gloo, CPU) over a global batch compute what one process computes."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from deltarnn.data import FeatureNormalizer
from deltarnn.train import TrainConfig, train
from deltarnn.train.checkpoint import load_weights
from deltarnn.train.runner import Data, build_model


class _Sequences:
    """Random (T_i, F) sequences whose class sets the mean of one feature: learnable, varied T."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(0, 3, (n,), generator=g).tolist()
        self.features = [
            torch.randn(int(torch.randint(4, 12, (1,), generator=g)), 5, generator=g)
            + torch.nn.functional.one_hot(torch.tensor(y), 5).float()
            for y in self.targets
        ]

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i], self.targets[i]

    def lengths(self):
        return [f.shape[0] for f in self.features]


def _data() -> Data:
    train_set, test_set = _Sequences(48, 0), _Sequences(16, 1)
    norm = FeatureNormalizer.fit(train_set.features)
    return Data(train_set, test_set, norm, 3, False, 5)


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


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    try:
        train(_config(), out, progress=False, evaluate_at_end=False, device="cpu", data=_data())
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_gloo_processes_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    single = train(
        _config(),
        tmp_path / "single",
        progress=False,
        evaluate_at_end=False,
        device="cpu",
        data=_data(),
    )
    assert len(single["history"]) == 2
    a = load_weights(tmp_path / "single/model.safetensors")
    b = load_weights(tmp_path / "ddp/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        # float32 sums in another order, amplified a little by Adam over 12 steps: ~1e-6
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=2e-5, msg=k)
    # and training did move the weights away from the seeded initialisation
    init = build_model(_config(), _data(), "cpu").state_dict()
    assert (a["rnn.weight_hh_l0"] - init["rnn.weight_hh_l0"]).abs().max() > 1e-2
