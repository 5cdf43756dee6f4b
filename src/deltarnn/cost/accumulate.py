"""A running total of the cost of many runs, for training and evaluation loops."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..errors import ConfigError
from ..functional import DeltaCounts
from .report import CostReport, DeltaModule, require_delta_module


class CostAccumulator:
    """Sums :class:`~deltarnn.CostReport` s over batches, as a torchmetrics metric does.

    Example::

        meter = deltarnn.CostAccumulator(model.rnn)
        for x, lengths in batches:
            out, h_n, counts = model.rnn(x, count=True)
            meter.update(counts, lengths)
        print(meter.compute())      # the cost of all batches together
        meter.reset()

    Args:
        module: the delta module whose counts are added (for its shapes and dtype).
        weight_bytes, act_bytes: as for :meth:`~deltarnn.CostReport.from_counts`.
    """

    def __init__(
        self,
        module: DeltaModule,
        *,
        weight_bytes: int | None = None,
        act_bytes: int | None = None,
    ) -> None:
        require_delta_module(module)
        self.module = module
        self.weight_bytes, self.act_bytes = weight_bytes, act_bytes
        self._total: CostReport | None = None
        self.updates = 0

    def update(self, counts: Sequence[DeltaCounts], lengths: Tensor | None = None) -> None:
        """Add one run: its per-layer counts (T, B) and optional (B,) valid lengths."""
        report = CostReport.from_counts(
            self.module,
            counts,
            lengths=lengths,
            weight_bytes=self.weight_bytes,
            act_bytes=self.act_bytes,
        )
        self._total = report if self._total is None else self._total + report
        self.updates += 1

    def compute(self) -> CostReport:
        """The cost of every run added since the last :meth:`reset`."""
        if self._total is None:
            raise ConfigError("CostAccumulator.compute() needs at least one update() first")
        return self._total

    def reset(self) -> None:
        self._total, self.updates = None, 0
