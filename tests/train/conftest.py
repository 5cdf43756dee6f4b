"""Helpers of the training tests: one torch thread, and small learnable sequence data sets."""

from __future__ import annotations

import pytest
import torch

from deltarnn.data import FeatureNormalizer
from deltarnn.data._dataset import FeatureSequenceDataset
from deltarnn.train import Data


@pytest.fixture(autouse=True)
def _one_thread():
    # Small models: extra threads only add overhead, and the CI machine has 2 cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sequences(n: int, seed: int, features: int = 5, classes: int = 3) -> FeatureSequenceDataset:
    """Random (T_i, F) sequences whose class sets the mean of one feature: learnable, varied T.
    (A package dataset class, so that it pickles into spawned processes.)"""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (n,), generator=g).tolist()
    feats = [
        (
            torch.randn(int(torch.randint(4, 12, (1,), generator=g)), features, generator=g)
            + torch.nn.functional.one_hot(torch.tensor(y), features).float()
        ).numpy()
        for y in targets
    ]
    return FeatureSequenceDataset(feats, targets)


@pytest.fixture(scope="module")
def fsdd():
    """Skip unless the FSDD recordings are found (``$DELTARNN_DATA``)."""
    from deltarnn.data import DataNotFoundError, list_recordings

    try:
        list_recordings()
    except DataNotFoundError:
        pytest.skip("FSDD not found (set DELTARNN_DATA)")


@pytest.fixture
def sequence_data():
    """``sequence_data(val=False)``: a :class:`~deltarnn.train.Data` of 48 train / 16 test
    (and 16 validation) synthetic items, 3 classes, 5 features."""

    def make(val: bool = False) -> Data:
        train, test = sequences(48, 0), sequences(16, 1)
        return Data(
            train,
            test,
            FeatureNormalizer.fit(train.features),
            num_classes=3,
            per_frame=False,
            input_size=5,
            val=sequences(16, 2) if val else None,
        )

    return make
