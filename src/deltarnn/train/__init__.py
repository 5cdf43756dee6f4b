"""Training delta networks: the paper's methods, a loop with checkpoints, sweeps and reports.

Methods (:mod:`.methods`): fixed-point rounding with a straight-through gradient
(:func:`quantize`), Gaussian noise on the inputs of the products (:class:`GaussianNoise`), direct
delta training with a threshold warm-up (:func:`threshold_schedule`), an L1 cost on the deltas
(:func:`delta_l1_cost`), and, beyond the paper, per-layer and learnable thresholds
(:class:`LearnableDeltaEncoder`). The loop (:func:`train`, :func:`evaluate`) runs one CPU, one GPU
or several processes under ``torchrun``.
"""

from .config import DataConfig, MethodConfig, ModelConfig, OptimConfig, TrainConfig
from .ctc import edit_distance, greedy_decode
from .loop import batch_plan, evaluate, load_data, load_model, train
from .methods import (
    Compose,
    FixedPointRound,
    GaussianNoise,
    LearnableDeltaEncoder,
    delta_l1_cost,
    fixed_point_range,
    quantize,
    threshold_schedule,
)
from .model import SequenceModel

__all__ = [
    "Compose",
    "DataConfig",
    "FixedPointRound",
    "GaussianNoise",
    "LearnableDeltaEncoder",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "SequenceModel",
    "TrainConfig",
    "batch_plan",
    "delta_l1_cost",
    "edit_distance",
    "evaluate",
    "fixed_point_range",
    "greedy_decode",
    "load_data",
    "load_model",
    "quantize",
    "threshold_schedule",
    "train",
]
