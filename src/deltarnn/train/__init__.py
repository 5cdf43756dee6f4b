"""Training delta networks: the paper's methods, one training engine, one evaluation, results.

Methods (:mod:`.methods`): fixed-point rounding with a straight-through gradient
(:func:`quantize`), Gaussian noise on the inputs of the products (:class:`GaussianNoise`), direct
delta training with a threshold warm-up (:func:`threshold_schedule`), an L1 cost on the deltas
(:func:`delta_l1_cost`), and, beyond the paper, per-layer and learnable thresholds
(:class:`LearnableDeltaEncoder`).

Engine (:mod:`.engine`): :func:`fit` is the one optimisation loop (cosine schedule, threshold
warm-up, clipping, checkpoints in a :class:`RunFolder`, resume, data parallelism under
``torchrun``, per-epoch validation and model selection, CSV/TensorBoard logs).
:func:`evaluate` runs a model once with counts and builds the cost report from them.

Runs (:mod:`.runner`): :func:`train` / :func:`load_model` for a :class:`TrainConfig` (what
``deltarnn train`` and ``eval`` do); sweeps (:mod:`.sweep`); results rows, tables and plots
(:mod:`.results`). Experiments live outside the package, in ``experiments/``.
"""

from .batches import (
    Batch,
    IndexBatches,
    batch_plan,
    classification_batch,
    ctc_batch,
    frame_label_batch,
    ordered_batches,
)
from .checkpoint import RunFolder, load_weights, save_weights
from .config import DataConfig, MethodConfig, ModelConfig, OptimConfig, TrainConfig
from .ctc import edit_distance, greedy_decode
from .engine import FitResult, Hooks, Loss, Schedule, fit, fit_run
from .evaluate import RMSE, Accuracy, ErrorRate, Evaluation, Metric, evaluate
from .loggers import CSVLogger, TensorBoardLogger, default_loggers
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
from .model import ModelOutput, SequenceModel, run_rnn
from .results import ReportSpec, Row, append_rows, best_within, read_rows, render, summarise
from .runner import Data, evaluate_run, load_data, load_model, train

__all__ = [
    "RMSE",
    "Accuracy",
    "Batch",
    "CSVLogger",
    "Compose",
    "Data",
    "DataConfig",
    "ErrorRate",
    "Evaluation",
    "FitResult",
    "FixedPointRound",
    "GaussianNoise",
    "Hooks",
    "IndexBatches",
    "LearnableDeltaEncoder",
    "Loss",
    "MethodConfig",
    "Metric",
    "ModelConfig",
    "ModelOutput",
    "OptimConfig",
    "ReportSpec",
    "Row",
    "RunFolder",
    "Schedule",
    "SequenceModel",
    "TensorBoardLogger",
    "TrainConfig",
    "append_rows",
    "batch_plan",
    "best_within",
    "classification_batch",
    "ctc_batch",
    "default_loggers",
    "delta_l1_cost",
    "edit_distance",
    "evaluate",
    "evaluate_run",
    "fit",
    "fit_run",
    "fixed_point_range",
    "frame_label_batch",
    "greedy_decode",
    "load_data",
    "load_model",
    "load_weights",
    "ordered_batches",
    "quantize",
    "read_rows",
    "render",
    "run_rnn",
    "save_weights",
    "summarise",
    "threshold_schedule",
    "train",
]
