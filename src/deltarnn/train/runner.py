"""Runs of a :class:`TrainConfig` into a run folder: what ``deltarnn train`` and ``eval`` do.

:func:`train` loads the data a config names (FSDD digits or connected digit strings), builds a
:class:`SequenceModel` with the config's methods, trains it with :func:`~deltarnn.train.fit`
(checkpoints, resume, data parallelism, per-epoch validation) and evaluates it once with counts
(:func:`~deltarnn.train.evaluate`). The run folder (:mod:`deltarnn.train.checkpoint`) adds::

    normalizer.json   feature statistics fitted on the training split
    metrics.json      test metric and cost of the final model; ``history``: train loss,
                      learning rate and, with a validation split, the validation metric,
                      occupancies and MAC reduction of every epoch
    metrics.csv       the same per-epoch history as CSV (and ``tensorboard/`` if installed)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..data import FeatureNormalizer, UtteranceNormalizer
from ..errors import ConfigError
from .batches import Batch, IndexBatches, classification_batch, ctc_batch, ordered_batches
from .checkpoint import RunFolder, load_into, load_weights, verify_finished
from .config import DataConfig, TrainConfig
from .engine import (
    Hooks,
    Loss,
    Schedule,
    default_device,
    fit,
    init_distributed,
    stored_thresholds,
)
from .evaluate import Accuracy, ErrorRate, Evaluation, Metric, evaluate
from .loggers import default_loggers
from .methods import delta_l1_cost
from .model import SequenceModel

log = logging.getLogger(__name__)


# -- data --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Data:
    """Train, validation (or ``None``) and test datasets, normalised, and what the model needs."""

    train: Any
    test: Any
    normalizer: FeatureNormalizer
    num_classes: int
    per_frame: bool
    input_size: int
    val: Any = None

    def batches(self, dataset: Any, batch_size: int = 200) -> list[Batch]:
        """Every item of ``dataset`` once, for evaluation."""
        return ordered_batches(
            dataset, ctc_batch if self.per_frame else classification_batch, batch_size
        )

    def metric(self) -> Metric:
        return ErrorRate("der") if self.per_frame else Accuracy()


_DATA_CACHE: dict[str, Data] = {}


def _subset(ds, limit: int):
    """Keep ``limit`` items (0: all), spread over the split by taking every k-th item."""
    if not limit or limit >= len(ds):
        return ds
    step = len(ds) / limit
    keep = [int(i * step) for i in range(limit)]
    ds.features = [ds.features[i] for i in keep]
    ds.targets = [ds.targets[i] for i in keep]
    return ds


def load_data(cfg: DataConfig) -> Data:
    """Load (and memoise in this process) the datasets a :class:`DataConfig` names."""
    cfg.validate()
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    split_kwargs: dict[str, Any] = {}
    if cfg.split == "speaker":
        if cfg.test_speakers:
            split_kwargs["test_speakers"] = tuple(cfg.test_speakers)
        split_kwargs["val_speakers"] = tuple(cfg.val_speakers)
    else:
        split_kwargs["val_takes"] = tuple(cfg.val_takes)
    if cfg.task == "digits":
        from ..data import load_fsdd

        splits = load_fsdd(cfg.root, split=cfg.split, **split_kwargs)
        num_classes, per_frame = 10, False
    else:
        from ..data import load_digit_strings

        n = cfg.num_strings
        counts = {"train": n, "val": max(1, n // 4), "test": max(1, n // 4)}
        splits = load_digit_strings(cfg.root, split=cfg.split, num_examples=counts, **split_kwargs)
        num_classes, per_frame = 11, True
    train = _subset(splits["train"], cfg.limit_train)
    test = _subset(splits["test"], cfg.limit_test)
    val = _subset(splits["val"], cfg.limit_test) if "val" in splits else None
    if cfg.utterance_norm:
        utterance = UtteranceNormalizer.fit(train.features)
        norm, transform = utterance.normalizer, utterance
    else:
        norm = transform = FeatureNormalizer.fit(train.features)
    for ds in (train, val, test):
        if ds is not None:
            ds.transform = transform
    data = Data(train, test, norm, num_classes, per_frame, train.num_features, val)
    _DATA_CACHE[key] = data
    return data


# -- model and loss ----------------------------------------------------------------------------


def build_model(cfg: TrainConfig, data: Data, device) -> SequenceModel:
    """The config's model, seeded, optionally started from another run's weights."""
    torch.manual_seed(cfg.seed)
    model = SequenceModel(cfg.model, data.input_size, data.num_classes, data.per_frame)
    if not cfg.method.delta:
        model.rnn.set_thresholds(0.0, 0.0)  # dense training; cfg.model's Θ apply at evaluation
    if cfg.method.init_from:
        src = Path(cfg.method.init_from)
        src = src / "model.safetensors" if src.is_dir() else src
        # The weights only: thresholds come from this config.
        load_into(model, load_weights(src), src, keys=lambda k: not k.startswith("rnn.theta"))
        log.info("initialised from %s", src)
    model.to(device)
    model.apply_method(cfg.method)
    return model


def loss_function(cfg: TrainConfig):
    """The task loss (cross-entropy or CTC) plus the method's costs, as a ``fit`` loss."""
    method = cfg.method

    def loss_fn(model: SequenceModel, batch: Batch) -> Loss:
        out = model.run(batch.x, batch.lengths, count=method.needs_counts)
        if model.per_frame:
            task = nn.functional.ctc_loss(
                out.y,
                batch.target,
                batch.lengths,
                batch.target_lengths,
                reduction="sum",
                zero_infinity=True,
            )
        else:
            task = nn.functional.cross_entropy(out.y, batch.target, reduction="sum")
        loss = task / batch.size
        if out.counts is not None:
            loss = loss + delta_l1_cost(
                out.counts, batch.lengths, method.l1_x, method.l1_h, frames=batch.frames
            )
        if method.occupancy_cost:
            share = float(batch.lengths.sum()) / batch.frames
            loss = loss + method.occupancy_cost * out.soft_occupancy * share
        return Loss(loss, float(task.detach()), len(batch.lengths))

    return loss_fn


def schedule_of(cfg: TrainConfig) -> Schedule:
    """The engine's schedule of a config (the optimiser settings are named alike)."""
    warmup = cfg.method.theta_warmup_epochs if cfg.method.delta else 0.0
    return Schedule(
        epochs=cfg.epochs,
        theta_warmup_epochs=warmup,
        seed=cfg.seed,
        **dataclasses.asdict(cfg.optim),
    )


def set_eval_thresholds(model: SequenceModel, cfg: TrainConfig) -> None:
    """The thresholds a run is evaluated at: the config's (learned ones once baked)."""
    if not cfg.method.learnable_theta:
        model.rnn.set_thresholds(cfg.model.theta_x, cfg.model.theta_h)


def _validation(cfg: TrainConfig, data: Data):
    """Per-epoch validation at the evaluation thresholds (``None`` without a validation split)."""
    if data.val is None:
        return None
    batches = data.batches(data.val)

    def validate(model: SequenceModel) -> dict[str, float | None]:
        saved = stored_thresholds(model.rnn)
        set_eval_thresholds(model, cfg)
        try:
            return evaluate(model, batches, data.metric()).summary()
        finally:
            model.rnn.set_thresholds(*saved)

    return validate


# -- a run -------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    force: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    evaluate_at_end: bool = True,
    device: torch.device | str | None = None,
    data: Data | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir`` and return the final metrics.

    Args:
        resume: continue from the folder's latest complete checkpoint; ``False`` clears the
            folder's checkpoints and results first (same config only).
        force: a folder holding another config's run is cleared and reused (else refused).
        progress: progress bars (on a terminal, rank 0).
        stop_after_epochs: stop (as if interrupted) after this many epochs in total.
        evaluate_at_end: evaluate on the test set and write ``metrics.json``.
        data: use these datasets instead of the ones ``cfg.data`` names (tests, custom data).

    Raises:
        RunFolderError: the folder belongs to another config (without ``force``), or a
            checkpoint in it is incomplete or corrupt.
    """
    cfg.validate()
    rank, world = init_distributed()
    device = torch.device(device) if device is not None else default_device()
    data = load_data(cfg.data) if data is None else data
    model = build_model(cfg, data, device)
    folder = RunFolder(out_dir, cfg.to_dict())
    if rank == 0:
        folder.open(resume=resume, force=force)
        data.normalizer.save(folder.path / "normalizer.json")
    if world > 1:
        dist.barrier()
    validate = _validation(cfg, data)
    hooks = Hooks(
        validate=validate,
        select=data.metric().name if cfg.select_epoch == "best_val" else None,
        maximize=data.metric().higher_is_better,
        loggers=default_loggers(folder.path) if rank == 0 else (),
    )
    batches = IndexBatches(
        data.train,
        cfg.data.batch_size,
        cfg.seed,
        ctc_batch if data.per_frame else classification_batch,
    )
    result = fit(
        model,
        batches,
        loss_function(cfg),
        schedule=schedule_of(cfg),
        hooks=hooks,
        checkpoint=folder,
        progress=progress,
        stop_after_epochs=stop_after_epochs,
    )
    if not result.finished:
        return {"interrupted_at_epoch": len(result.history)}
    model.bake_thresholds()
    set_eval_thresholds(model, cfg)
    metrics: dict[str, Any] = {"history": result.history, "best_epoch": result.best_epoch}
    if rank == 0:
        if evaluate_at_end:
            test = evaluate(model, data.batches(data.test), data.metric(), progress=progress)
            metrics.update(test.to_dict())
            metrics["n_test"] = metrics.pop("items")
        folder.finish(model.state_dict(), metrics)
    if world > 1:
        dist.barrier()
    return metrics


def load_model(run_dir: str | Path, device="cpu") -> tuple[SequenceModel, TrainConfig, Data]:
    """The final model of a finished run folder (checked against its manifest), its config and
    data. Learned thresholds load whatever their shape."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_dict(verify_finished(run_dir))
    data = load_data(cfg.data)
    model = SequenceModel(cfg.model, data.input_size, data.num_classes, data.per_frame)
    model.apply_method(dataclasses.replace(cfg.method, learnable_theta=False))
    path = run_dir / "model.safetensors"
    state = load_weights(path)
    layers = range(model.rnn.num_layers)
    try:
        # Learned thresholds were baked into the RNN per feature: restore them in their shape.
        model.rnn.set_thresholds(
            [state[f"rnn.theta_x_l{k}"] for k in layers],
            [state[f"rnn.theta_h_l{k}"] for k in layers],
        )
    except KeyError as exc:
        raise ConfigError(f"{path}: no threshold {exc} (not a model of this package?)") from None
    load_into(model, state, path)
    return model.to(device), cfg, data


def evaluate_run(
    model: SequenceModel, data: Data, dataset: Any = None, *, progress: bool = False
) -> Evaluation:
    """Evaluate ``model`` on ``dataset`` (default: the test split) at its current thresholds."""
    return evaluate(
        model,
        data.batches(data.test if dataset is None else dataset),
        data.metric(),
        progress=progress,
    )
