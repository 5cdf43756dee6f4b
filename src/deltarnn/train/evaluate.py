"""One evaluation: each batch runs through the network once, with counts, and the cost report is
built from those counts (:meth:`~deltarnn.CostReport.from_counts`), padded frames excluded.

Metrics are small accumulators (``update(output, batch)``, ``compute()``):
:class:`Accuracy`, :class:`ErrorRate` (greedy CTC decoding and edit distance: digit or character
error rate) and :class:`RMSE` (per-frame regression).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..cost import CostReport
from ..errors import ConfigError
from .batches import Batch
from .ctc import BLANK, edit_distance, greedy_decode
from .methods import valid_mask


class Metric(Protocol):
    """An accumulator over batches. ``name`` is the headline number's key in :meth:`compute`."""

    name: str
    higher_is_better: bool

    def update(self, output: Tensor, batch: Batch) -> None: ...

    def compute(self) -> dict[str, float]: ...


class Accuracy:
    """Share of items whose argmax over (B, C) logits equals the (B,) label.

    ``per_item`` keeps 1.0 / 0.0 for every item in evaluation order (for bootstrap intervals).
    """

    name = "accuracy"
    higher_is_better = True

    def __init__(self) -> None:
        self.correct = self.n = 0
        self.per_item: list[float] = []

    def update(self, output: Tensor, batch: Batch) -> None:
        hits = (output.argmax(-1) == batch.target.to(output.device)).tolist()
        self.correct += sum(hits)
        self.n += len(hits)
        self.per_item.extend(float(h) for h in hits)

    def compute(self) -> dict[str, float]:
        return {self.name: self.correct / max(1, self.n)}


class ErrorRate:
    """Edit distance of greedy CTC decodings over the reference length (DER, CER, ...), and the
    share of sequences decoded exactly (``exact``).

    ``per_item`` keeps (edits, reference length) of every sequence in evaluation order.
    """

    higher_is_better = False

    def __init__(self, name: str = "der", blank: int = BLANK) -> None:
        self.name, self.blank = name, blank
        self.edits = self.ref_len = self.exact = self.n = 0
        self.per_item: list[tuple[int, int]] = []

    def update(self, output: Tensor, batch: Batch) -> None:
        refs = torch.split(batch.target.cpu(), batch.target_lengths.tolist())
        for hyp, ref in zip(greedy_decode(output, batch.lengths, self.blank), refs, strict=True):
            d = edit_distance(hyp, ref.tolist())
            self.edits += d
            self.ref_len += len(ref)
            self.exact += d == 0
            self.n += 1
            self.per_item.append((d, len(ref)))

    def compute(self) -> dict[str, float]:
        return {self.name: self.edits / max(1, self.ref_len), "exact": self.exact / max(1, self.n)}


class RMSE:
    """Root mean squared error of (T, B) predictions against (T, B) targets over valid frames.

    ``per_item`` keeps each sequence's (T_i,) squared errors in evaluation order (a stream's
    frames, for a block bootstrap).
    """

    name = "rmse"
    higher_is_better = False

    def __init__(self) -> None:
        self.se, self.n = 0.0, 0
        self.per_item: list[list[float]] = []

    def update(self, output: Tensor, batch: Batch) -> None:
        mask = valid_mask(batch.lengths, output.shape[0], output.shape[1]).to(output.device)
        err = (output - batch.target.to(output.device)) ** 2
        self.se += float((err * mask).sum())
        self.n += int(mask.sum())
        for b, steps in enumerate(batch.lengths.tolist()):
            self.per_item.append(err[:steps, b].tolist())

    def compute(self) -> dict[str, float]:
        return {self.name: math.sqrt(self.se / max(1, self.n))}


@dataclasses.dataclass
class Evaluation:
    """The metric's numbers and the cost report of one evaluation."""

    metric: str
    metrics: dict[str, float]
    cost: CostReport
    items: int

    @property
    def value(self) -> float:
        return self.metrics[self.metric]

    def summary(self, prefix: str = "") -> dict[str, float | None]:
        """Flat numbers for a history record: the metrics, occupancies and reductions."""
        out: dict[str, float | None] = {f"{prefix}{k}": v for k, v in self.metrics.items()}
        total = self.cost.to_dict()["total"]
        for key in ("occupancy_x", "occupancy_h", "mac_reduction", "compute_speedup"):
            out[f"{prefix}{key}"] = total[key]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            **self.metrics,
            "items": self.items,
            "cost": self.cost.to_dict(),
            "cost_table": self.cost.table(),
        }


class DeltaModel(Protocol):
    """What :func:`evaluate` runs: the delta module to cost, and a counted run."""

    rnn: nn.Module

    def run(self, x: Tensor, lengths: Tensor, count: bool = False) -> Any: ...


@torch.no_grad()
def evaluate(
    model: DeltaModel, batches: Iterable[Batch], metric: Metric, *, progress: bool = False
) -> Evaluation:
    """Run every batch once (eval mode, no gradients, the fastest backend) with counts.

    Args:
        model: ``model.run(x, lengths, count=True)`` returns ``(y, counts, ...)`` and
            ``model.rnn`` is the delta module the counts belong to.
        batches: :class:`~deltarnn.train.Batch`\\ es (e.g. :func:`~deltarnn.train.ordered_batches`).
        metric: a fresh :class:`Metric`.
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    report: CostReport | None = None
    items = 0
    try:
        for batch in tqdm(batches, desc="evaluate", disable=None if progress else True):
            batch = batch.to(device)
            y, counts = model.run(batch.x, batch.lengths, count=True)[:2]
            metric.update(y, batch)
            r = CostReport.from_counts(model.rnn, counts, lengths=batch.lengths.to(device))
            report = r if report is None else report + r
            items += len(batch.lengths)
    finally:
        model.train(was_training)
    if report is None:
        raise ConfigError("evaluate got no batches (an empty dataset?)")
    return Evaluation(metric.name, metric.compute(), report, items)
