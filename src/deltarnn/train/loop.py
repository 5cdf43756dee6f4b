"""The training loop: data, batches, methods, checkpoints, resumption, data parallelism, evaluation.

One code path runs on one CPU, one GPU, or several processes under ``torchrun`` (gloo on CPU,
nccl on CUDA). Every process sees the same *global* batch plan (fixed by seed and epoch) and takes
its slice; losses are sums divided by the global batch's count, and gradients are summed across
processes, so a k-process run computes the gradient of the single-process run exactly (up to
floating-point summation order).

Run folder layout::

    config.json          the TrainConfig
    normalizer.json      feature mean/std fitted on the training split
    model.safetensors    final weights (thresholds included), written at the end
    metrics.json         evaluation of the final model
    ckpt/model.safetensors, ckpt/optimizer.pt, ckpt/state.json   after every epoch (resume)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..cost import CostReport, measure
from ..data import FeatureNormalizer, collate_ctc, collate_sequences
from ..errors import ConfigError
from .config import DataConfig, TrainConfig
from .ctc import edit_distance as _edit_distance
from .ctc import greedy_decode
from .methods import delta_l1_cost, threshold_schedule
from .model import SequenceModel

log = logging.getLogger(__name__)


# -- data --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Data:
    """Train and test datasets (normalised), with what the model needs to know about them."""

    train: Any
    test: Any
    normalizer: FeatureNormalizer
    num_classes: int
    per_frame: bool
    input_size: int


_DATA_CACHE: dict[str, Data] = {}


class UtteranceNorm:
    """(T, F) -> (x - mean over this utterance's frames) / global per-band std."""

    def __init__(self, normalizer: FeatureNormalizer) -> None:
        self.normalizer = normalizer

    def __call__(self, x):
        return self.normalizer(x - x.mean(0))


def _subset(ds, limit: int):
    """Keep the first ``limit`` items (0: all), spread over classes by taking every k-th item."""
    if not limit or limit >= len(ds):
        return ds
    step = len(ds) / limit
    keep = [int(i * step) for i in range(limit)]
    ds.features = [ds.features[i] for i in keep]
    ds.targets = [ds.targets[i] for i in keep]
    return ds


def load_data(cfg: DataConfig) -> Data:
    """Load (and memoise in this process) the datasets a :class:`DataConfig` names."""
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    if cfg.task == "digits":
        from ..data import load_fsdd

        splits = load_fsdd(cfg.root, split=cfg.split)
        num_classes, per_frame = 10, False
    else:
        from ..data import load_digit_strings

        n = cfg.num_strings
        splits = load_digit_strings(
            cfg.root, split=cfg.split, num_examples={"train": n, "test": max(1, n // 4)}
        )
        num_classes, per_frame = 11, True
    train = _subset(splits["train"], cfg.limit_train)
    test = _subset(splits["test"], cfg.limit_test)
    norm = FeatureNormalizer.fit(train.features)
    if cfg.utterance_norm:
        norm = FeatureNormalizer.fit([f - f.mean(0) for f in train.features])
        train.transform = test.transform = UtteranceNorm(norm)
    else:
        train.transform = test.transform = norm
    data = Data(train, test, norm, num_classes, per_frame, train.num_features)
    _DATA_CACHE[key] = data
    return data


def batch_plan(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Global batches for one epoch: shuffled, then bucketed by length within groups of batches.

    Sorting by length inside a group of 8 batches keeps padding (and the step loop) short while the
    batch order stays random. Depends only on (lengths, batch_size, seed, epoch).
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    group = 8 * batch_size
    batches = []
    for start in range(0, len(perm), group):
        chunk = sorted(perm[start : start + group], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def make_batch(dataset, indices: list[int], per_frame: bool, device) -> tuple[Tensor, ...]:
    """Collate items into (T, B, F) features, lengths and targets on ``device``."""
    items = [dataset[i] for i in indices]
    if per_frame:
        x, lengths, targets, target_lengths = collate_ctc(items)
        return x.to(device), lengths, targets, target_lengths
    x, lengths, labels = collate_sequences(items)
    return x.to(device), lengths, labels.to(device)


# -- distributed -------------------------------------------------------------------------------


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _all_reduce_grads(params: list[torch.nn.Parameter], world: int) -> None:
    if world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


# -- model, optimiser, checkpoints -------------------------------------------------------------


def build_model(cfg: TrainConfig, data: Data, device) -> SequenceModel:
    torch.manual_seed(cfg.seed)
    model = SequenceModel(cfg.model, data.input_size, data.num_classes, data.per_frame)
    if cfg.method.init_from:
        src = Path(cfg.method.init_from)
        src = src / "model.safetensors" if src.is_dir() else src
        state = load_weights(src)
        state = {
            k: v for k, v in state.items() if k.startswith(("rnn.weight", "rnn.bias", "head."))
        }
        missing, _ = model.load_state_dict(state, strict=False)
        real_missing = [k for k in missing if k.startswith(("rnn.weight", "rnn.bias", "head."))]
        if real_missing:
            raise ConfigError(f"init_from {src} lacks weights {real_missing}")
        log.info("initialised from %s", src)
    model.to(device)
    model.apply_method(cfg.method)
    return model


def save_weights(state: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def load_weights(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_model(run_dir: str | Path, device="cpu") -> tuple[SequenceModel, TrainConfig, Data]:
    """The final model of a run folder, with its config and data (normaliser from the run)."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.load(run_dir / "config.json")
    data = load_data(cfg.data)
    model = SequenceModel(cfg.model, data.input_size, data.num_classes, data.per_frame)
    method = dataclasses.replace(cfg.method, learnable_theta=False)
    model.apply_method(method)  # learned thresholds were baked into the RNN's buffers
    missing, unexpected = model.load_state_dict(
        load_weights(run_dir / "model.safetensors"), strict=False
    )
    if missing or [k for k in unexpected if not k.startswith("dispatch.")]:
        raise ConfigError(
            f"{run_dir}/model.safetensors: missing {missing}, unexpected {unexpected}"
        )
    return model.to(device), cfg, data


def _save_checkpoint(ckpt: Path, model, optimizer, state: dict) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    save_weights(model.state_dict(), ckpt / "model.safetensors")
    tmp = ckpt / "optimizer.pt.tmp"
    torch.save(optimizer.state_dict(), tmp)  # only our own tensors and numbers
    os.replace(tmp, ckpt / "optimizer.pt")
    (ckpt / "state.json.tmp").write_text(json.dumps(state))
    os.replace(ckpt / "state.json.tmp", ckpt / "state.json")


def _load_checkpoint(ckpt: Path, model, optimizer) -> dict:
    model.load_state_dict(load_weights(ckpt / "model.safetensors"))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    return json.loads((ckpt / "state.json").read_text())


# -- training ----------------------------------------------------------------------------------


def _set_training_thresholds(model: SequenceModel, cfg: TrainConfig, epoch_progress: float):
    """Θ in the forward pass: 0 for dense methods, the (warmed-up) targets for delta training."""
    if cfg.method.learnable_theta:
        return
    if not cfg.method.delta:
        model.rnn.set_thresholds(0.0, 0.0)
        return
    w = cfg.method.theta_warmup_epochs

    def ramp(v):
        return (
            [threshold_schedule(epoch_progress, t, w) for t in v]
            if isinstance(v, list)
            else (threshold_schedule(epoch_progress, v, w))
        )

    model.rnn.set_thresholds(ramp(cfg.model.theta_x), ramp(cfg.model.theta_h))


def _loss(model: SequenceModel, cfg: TrainConfig, batch, n_global: int, frames_global: float):
    """Task loss + method costs, as sums over this process's items divided by global counts."""
    needs_counts = cfg.method.needs_counts
    if model.per_frame:
        x, lengths, targets, target_lengths = batch
        out = model(x, lengths, count=needs_counts)
        logp, counts = out if needs_counts else (out, None)
        task = torch.nn.functional.ctc_loss(
            logp, targets, lengths, target_lengths, reduction="sum", zero_infinity=True
        )
    else:
        x, lengths, labels = batch
        out = model(x, lengths, count=needs_counts)
        logits, counts = out if needs_counts else (out, None)
        task = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    loss = task / n_global
    if counts is not None:
        loss = loss + delta_l1_cost(
            counts, lengths, cfg.method.l1_x, cfg.method.l1_h, frames=frames_global
        )
    if cfg.method.occupancy_cost:
        share = float(lengths.sum()) / frames_global
        loss = loss + cfg.method.occupancy_cost * model.occupancy_cost(lengths) * share
    return loss, task.detach()


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    evaluate_at_end: bool = True,
    device: torch.device | str | None = None,
    data: Data | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir`` and return the final metrics.

    Args:
        resume: continue from ``out_dir/ckpt`` if a checkpoint exists.
        progress: tqdm bars with ETA (on rank 0).
        stop_after_epochs: stop (as if interrupted) after this many epochs in total.
        evaluate_at_end: run :func:`evaluate` on the test set and write ``metrics.json``.
        data: use these datasets instead of loading the ones ``cfg.data`` names (tests, custom
            data: items ``(features (T_i, F), target)`` and a ``lengths()`` method).
    """
    from tqdm.auto import tqdm

    cfg.validate()
    rank, world = init_distributed()
    device = torch.device(device) if device is not None else default_device()
    out = Path(out_dir)
    ckpt = out / "ckpt"
    data = load_data(cfg.data) if data is None else data
    model = build_model(cfg, data, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    state = {"epoch": 0, "history": []}
    if resume and (ckpt / "state.json").exists():
        state = _load_checkpoint(ckpt, model, optimizer)
        log.info("resumed %s at epoch %d", out, state["epoch"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
        data.normalizer.save(out / "normalizer.json")
    lengths = data.train.lengths()
    plans = [batch_plan(lengths, cfg.data.batch_size, cfg.seed, e) for e in range(cfg.epochs)]
    total_steps = sum(len(p) for p in plans)
    step = sum(len(p) for p in plans[: state["epoch"]])
    last = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
    for epoch in range(state["epoch"], last):
        # Reseeded per epoch (and rank), so noise and dropout after a resume are the same draws.
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rank)
        model.train()
        plan = plans[epoch]
        # disable=None: bars on a terminal only, so logs and CI output stay readable
        show = None if progress and not rank else True
        bar = tqdm(plan, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=show)
        t0, loss_sum, n_sum = time.time(), 0.0, 0
        for i, global_idx in enumerate(bar):
            _set_training_thresholds(model, cfg, epoch + i / len(plan))
            if cfg.optim.cosine:
                lr = cfg.optim.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total_steps)))
                for group in optimizer.param_groups:
                    group["lr"] = lr
            local = global_idx[rank::world]
            frames_global = float(sum(lengths[j] for j in global_idx))
            optimizer.zero_grad(set_to_none=True)
            if local:
                batch = make_batch(data.train, local, data.per_frame, device)
                loss, task = _loss(model, cfg, batch, len(global_idx), frames_global)
                loss.backward()
                loss_sum += float(task)
                n_sum += len(local)
            _all_reduce_grads(params, world)
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            optimizer.step()
            step += 1
            bar.set_postfix(loss=f"{loss_sum / max(1, n_sum):.3f}")
        state["epoch"] = epoch + 1
        state["history"].append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(1, n_sum),
                "seconds": time.time() - t0,
            }
        )
        log.info("epoch %d: train loss %.4f", epoch + 1, loss_sum / max(1, n_sum))
        if rank == 0:
            _save_checkpoint(ckpt, model, optimizer, state)
    if state["epoch"] < cfg.epochs:
        return {"interrupted_at_epoch": state["epoch"]}
    # Evaluation runs with the configured thresholds (dense methods are delta nets at run time).
    model.bake_thresholds()
    if not cfg.method.learnable_theta:
        model.rnn.set_thresholds(cfg.model.theta_x, cfg.model.theta_h)
    metrics: dict[str, Any] = {"history": state["history"]}
    if rank == 0:
        save_weights(model.state_dict(), out / "model.safetensors")
        if evaluate_at_end:
            metrics.update(evaluate(model, data, progress=progress))
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if world > 1:
        dist.barrier()
    return metrics


# -- evaluation --------------------------------------------------------------------------------


def evaluate(
    model: SequenceModel, data: Data, *, batch_size: int = 200, progress: bool = False
) -> dict[str, Any]:
    """Test-set metric and cost (``deltarnn.measure`` summed over the test batches).

    Returns a dict with ``metric`` ("accuracy" or "der"), ``value``, (``string_accuracy`` for
    strings), ``cost`` (the :class:`~deltarnn.CostReport` dict) and the cost table.
    """
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    ds = data.test
    order = sorted(range(len(ds)), key=lambda i: ds.lengths()[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    correct = edits = ref_len = strings_ok = n = 0
    report: CostReport | None = None
    with torch.no_grad():
        for idx in tqdm(batches, desc="evaluate", disable=None if progress else True):
            batch = make_batch(ds, idx, data.per_frame, device)
            x, lengths = batch[0], batch[1]
            y = model(x, lengths)
            r = measure(model.rnn, x, lengths=lengths.to(device))
            report = r if report is None else report + r
            n += len(idx)
            if data.per_frame:
                hyps = greedy_decode(y, lengths)
                targets, tl = batch[2].tolist(), batch[3].tolist()
                start = 0
                for hyp, k in zip(hyps, tl, strict=True):
                    ref = targets[start : start + k]
                    start += k
                    d = _edit_distance(hyp, ref)
                    edits += d
                    ref_len += k
                    strings_ok += d == 0
            else:
                correct += int((y.argmax(-1) == batch[2]).sum())
    result: dict[str, Any] = {"n_test": n}
    if data.per_frame:
        result.update(
            metric="der", value=edits / max(1, ref_len), string_accuracy=strings_ok / max(1, n)
        )
    else:
        result.update(metric="accuracy", value=correct / max(1, n))
    result["cost"] = report.to_dict()
    result["cost_table"] = report.table()
    return result
