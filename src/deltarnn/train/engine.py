"""The training engine: one optimisation loop for every model and experiment of the package.

:func:`fit` runs Adam over ``batches(epoch)`` for ``schedule.epochs`` epochs with

* one cosine learning-rate schedule (from ``lr`` down to ``lr_floor · lr``) and a threshold
  warm-up (every delta module's Θ ramped linearly from 0 over ``theta_warmup_epochs``);
* gradient-norm clipping;
* data parallelism: under ``torchrun`` (WORLD_SIZE > 1) every process takes its share of each
  global batch, losses are sums divided by the global batch's counts and gradients are summed,
  so k processes compute the one-process gradient (up to summation order);
* a checkpoint after every epoch into a :class:`~deltarnn.train.checkpoint.RunFolder`, and
  resumption from its latest complete checkpoint, bit-identical to an uninterrupted run (every
  epoch reseeds the random draws of noise and dropout);
* per-epoch validation (recorded in the history), model selection on a validation number, and
  per-epoch loggers (CSV, TensorBoard).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..cost import DeltaModule
from ..errors import ConfigError, RunFolderError
from .batches import rank_and_world
from .checkpoint import RunFolder, load_into, load_weights, read_json
from .methods import threshold_schedule

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long and how fast to train.

    Attributes:
        epochs: passes over the batches.
        lr: Adam's initial learning rate.
        lr_floor: the cosine ends at ``lr_floor * lr`` (0: decays to 0; 1: constant).
        cosine: decay along a half cosine over all steps (else constant ``lr``).
        weight_decay: Adam's L2 weight decay.
        grad_clip: clip the global gradient norm to this (0: off).
        theta_warmup_epochs: ramp every delta module's Θ from 0 to its value over this many
            epochs (fractional; 0: the full Θ from the first step).
        seed: reseeds torch's generator at each epoch (noise, dropout).
    """

    epochs: int
    lr: float = 3e-3
    lr_floor: float = 0.0
    cosine: bool = True
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    theta_warmup_epochs: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"epochs must be an int >= 0, got {self.epochs!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be finite and > 0, got {self.lr!r}")
        if not 0 <= self.lr_floor <= 1:
            raise ConfigError(f"lr_floor must be in [0, 1], got {self.lr_floor!r}")
        for name in ("weight_decay", "grad_clip", "theta_warmup_epochs"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {value!r}")

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of optimiser step ``step`` of ``total``."""
        if not self.cosine:
            return self.lr
        decay = 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
        return self.lr * (self.lr_floor + (1 - self.lr_floor) * decay)

    def theta_scale(self, progress: float) -> float:
        """The fraction of the target Θ in force ``progress`` epochs into training."""
        return threshold_schedule(progress, 1.0, self.theta_warmup_epochs)


class Loss(NamedTuple):
    """What a ``loss_fn`` returns.

    Attributes:
        value: the scalar to back-propagate (a sum over this process's items divided by the
            global batch's count, see :class:`~deltarnn.train.Batch`).
        total: the task loss summed over this process's items, for the epoch's mean.
        count: what ``total`` is summed over (items or frames).
    """

    value: Tensor
    total: float
    count: float


class EpochLogger(Protocol):
    """Receives every epoch's record (a flat mapping of numbers)."""

    def log(self, record: Mapping[str, Any]) -> None: ...


@dataclasses.dataclass
class Hooks:
    """What :func:`fit` does besides the optimisation steps.

    Attributes:
        validate: called after every epoch with the model in eval mode at its target Θ; the
            numbers it returns go into that epoch's history record as ``val_<name>``.
        select: keep the weights of the epoch with the best ``val_<select>`` and end with them
            (model selection on validation only); ``None``: end with the last epoch's.
        maximize: larger ``val_<select>`` is better.
        loggers: receive every epoch's record (:class:`~deltarnn.train.CSVLogger`, ...).
        before_step: ``(model, progress in epochs)`` before each step's forward pass, for
            schedules beyond the learning rate and Θ.
    """

    validate: Callable[[nn.Module], Mapping[str, float]] | None = None
    select: str | None = None
    maximize: bool = True
    loggers: Sequence[EpochLogger] = ()
    before_step: Callable[[nn.Module, float], None] | None = None


@dataclasses.dataclass
class FitResult:
    """``history``: one record per epoch (``epoch``, ``train_loss``, ``lr``, ``seconds`` and the
    validation numbers); ``finished``: all epochs ran; ``best_epoch``: the selected epoch."""

    history: list[dict[str, Any]]
    finished: bool
    best_epoch: int | None = None


def stored_thresholds(module: DeltaModule) -> tuple[list[Tensor], list[Tensor]]:
    """Copies of a delta module's Θx and Θh per layer as stored (a scalar stays a scalar), so
    that setting them back leaves the state_dict's shapes unchanged."""
    sd = module.state_dict()
    layers = range(module.num_layers)
    return (
        [sd[f"theta_x_l{k}"].detach().clone() for k in layers],
        [sd[f"theta_h_l{k}"].detach().clone() for k in layers],
    )


class _Thresholds:
    """The target Θ of every delta module in a model, and the warm-up that ramps them.

    The targets are the threshold buffers as stored (a scalar stays a scalar, a per-feature
    tensor keeps its shape), so checkpoints keep the model's state_dict shapes.
    """

    def __init__(self, model: nn.Module) -> None:
        self.targets = [
            (m, *stored_thresholds(m)) for m in model.modules() if isinstance(m, DeltaModule)
        ]

    def scale(self, factor: float) -> None:
        for m, xs, hs in self.targets:
            m.set_thresholds([factor * x for x in xs], [factor * h for h in hs])

    def restore(self) -> None:
        self.scale(1.0)


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank_and_world()


def default_device() -> torch.device:
    """This process's CUDA device (``LOCAL_RANK``) when there is one, else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _check_state(state: Any, epochs: int, where: str) -> dict[str, Any]:
    """A checkpoint's state.json must describe a prefix of this run."""
    if not isinstance(state, dict):
        raise RunFolderError(f"{where}: must be a mapping, got {type(state).__name__}")
    epoch, step, history = state.get("epoch"), state.get("step"), state.get("history")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        raise RunFolderError(f"{where}: epoch must be an int in [0, {epochs}], got {epoch!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise RunFolderError(f"{where}: step must be an int >= 0, got {step!r}")
    if not isinstance(history, list) or len(history) != epoch:
        raise RunFolderError(f"{where}: history must list {epoch} epochs")
    best = state.get("best")
    if best is not None and not (isinstance(best, dict) and {"epoch", "value"} <= set(best)):
        raise RunFolderError(f"{where}: best must be null or {{epoch, value}}, got {best!r}")
    return state


def fit(
    model: nn.Module,
    batches: Callable[[int], Sequence[Any]],
    loss_fn: Callable[[nn.Module, Any], Loss],
    *,
    schedule: Schedule,
    hooks: Hooks | None = None,
    params: Sequence[nn.Parameter] | None = None,
    checkpoint: RunFolder | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
) -> FitResult:
    """Train ``model`` and return its per-epoch history.

    Args:
        model: any module; its delta modules' thresholds are the warm-up's targets.
        batches: ``batches(epoch)``: that epoch's batches for this process (the same for the
            same epoch, so a resumed run sees what the interrupted one would have);
            ``None`` for a global batch of which this process has no item.
            :class:`~deltarnn.train.IndexBatches` makes them from a dataset.
        loss_fn: ``loss_fn(model, batch) -> Loss``.
        schedule: epochs, learning rate, clipping, warm-up.
        hooks: validation, model selection, loggers (see :class:`Hooks`).
        params: the parameters to train (default: every parameter that requires grad).
        checkpoint: an opened run folder: a checkpoint after every epoch, and resumption from
            its latest complete one. ``None``: nothing is written.
        progress: progress bars (on a terminal, rank 0).
        stop_after_epochs: stop (as if interrupted) after this many epochs in total.
    """
    from tqdm.auto import tqdm

    hooks = hooks or Hooks()
    rank, world = init_distributed()
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    optimizer = torch.optim.Adam(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    thresholds = _Thresholds(model)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "best": None}
    best_weights: dict[str, Tensor] | None = None
    latest = None if checkpoint is None else checkpoint.latest_checkpoint()
    if latest is not None:
        state = checkpoint.load_checkpoint(latest, model, optimizer)
        state = _check_state(state, schedule.epochs, str(latest / "state.json"))
        if state["best"] is not None and (latest / "best.safetensors").exists():
            best_weights = load_weights(latest / "best.safetensors")
        log.info("resumed %s after epoch %d", checkpoint.path, state["epoch"])
    plans = [batches(e) for e in range(schedule.epochs)]
    total_steps = sum(len(p) for p in plans)
    step = state["step"]
    last = schedule.epochs if stop_after_epochs is None else min(schedule.epochs, stop_after_epochs)
    for epoch in range(state["epoch"], last):
        torch.manual_seed(schedule.seed * 1_000_003 + epoch * 101 + rank)
        model.train()
        plan = plans[epoch]
        # disable=None: bars on a terminal only, so logs and CI output stay readable
        bar = tqdm(
            plan,
            desc=f"epoch {epoch + 1}/{schedule.epochs}",
            disable=None if progress and not rank else True,
        )
        t0, loss_total, loss_count = time.time(), 0.0, 0.0
        for i, batch in enumerate(bar):
            progress_epochs = epoch + i / max(1, len(plan))
            if schedule.theta_warmup_epochs:
                thresholds.scale(schedule.theta_scale(progress_epochs))
            lr = schedule.lr_at(step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if hooks.before_step is not None:
                hooks.before_step(model, progress_epochs)
            optimizer.zero_grad(set_to_none=True)
            if batch is not None:
                if hasattr(batch, "to"):
                    batch = batch.to(device)
                loss = loss_fn(model, batch)
                loss.value.backward()
                loss_total += float(loss.total)
                loss_count += float(loss.count)
            if world > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            if schedule.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, schedule.grad_clip)
            optimizer.step()
            step += 1
            bar.set_postfix(loss=f"{loss_total / max(1.0, loss_count):.4f}")
        thresholds.restore()  # validation and checkpoints see the target Θ
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_total / max(1.0, loss_count),
            "lr": lr if plan else schedule.lr_at(step, total_steps),
            "seconds": time.time() - t0,
        }
        if hooks.validate is not None:
            model.eval()
            record.update({f"val_{k}": v for k, v in hooks.validate(model).items()})
        if hooks.select is not None:
            value = record.get(f"val_{hooks.select}")
            if value is None:
                raise ConfigError(f"select={hooks.select!r}: validate returned no such number")
            best = state["best"]
            if best is None or (value > best["value"] if hooks.maximize else value < best["value"]):
                state["best"] = {"epoch": epoch + 1, "value": value}
                best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state["epoch"], state["step"] = epoch + 1, step
        state["history"].append(record)
        log.info("epoch %d: %s", epoch + 1, _format(record))
        if rank == 0:
            for logger in hooks.loggers:
                logger.log(record)
            if checkpoint is not None:
                extra = None if best_weights is None else {"best.safetensors": best_weights}
                checkpoint.save_checkpoint(epoch + 1, model, optimizer, state, extra)
        if world > 1:
            dist.barrier()
    thresholds.restore()
    finished = state["epoch"] >= schedule.epochs
    best_epoch = None if state["best"] is None else state["best"]["epoch"]
    if finished and best_weights is not None:
        model.load_state_dict(best_weights)
    return FitResult(copy.deepcopy(state["history"]), finished, best_epoch)


def _format(record: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in record.items()
        if k != "epoch"
    )


def fit_run(
    model: nn.Module,
    batches: Callable[[int], Sequence[Any]],
    loss_fn: Callable[[nn.Module, Any], Loss],
    *,
    schedule: Schedule,
    folder: RunFolder,
    hooks: Hooks | None = None,
    params: Sequence[nn.Parameter] | None = None,
    force: bool = False,
    progress: bool = True,
) -> FitResult:
    """:func:`fit` into a run folder, finished with the final weights and the history.

    A folder that already holds this finished run (same config, complete) loads its weights and
    history instead of training; one of another config is refused unless ``force``; an
    interrupted one resumes. For the stages of an experiment script (dense, retraining, ...).
    """
    rank, world = init_distributed()
    if rank == 0:
        folder.open(resume=True, force=force)
    if world > 1:
        dist.barrier()
    if folder.is_finished():
        path = folder.path / "model.safetensors"
        load_into(model, load_weights(path), path)
        metrics = read_json(folder.path / "metrics.json")
        return FitResult(metrics["history"], True, metrics.get("best_epoch"))
    result = fit(
        model,
        batches,
        loss_fn,
        schedule=schedule,
        hooks=hooks,
        params=params,
        checkpoint=folder,
        progress=progress,
    )
    if rank == 0 and result.finished:
        folder.finish(
            model.state_dict(), {"history": result.history, "best_epoch": result.best_epoch}
        )
    return result
