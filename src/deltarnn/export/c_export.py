"""``export_c``: a trained delta model as dependency-free C99 source."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..functional import RESYNC_EVERY
from . import c_source
from .memory import MemoryReport, memory_report
from .model import ExportedModel, read_model

log = logging.getLogger(__name__)

_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch typedef "
    "union unsigned void volatile while _Bool _Complex _Imaginary".split()
)


@dataclass(frozen=True)
class CExport:
    """What :func:`export_c` wrote.

    Attributes:
        header, source: ``<prefix>.h`` and ``<prefix>.c``.
        driver: ``<prefix>_main.c`` when asked for (``with_main``), else ``None``.
        memory: bytes of the weights and the state (also in the header's comment).
        model: the checked arrays the files were written from.
    """

    header: Path
    source: Path
    driver: Path | None
    memory: MemoryReport
    model: ExportedModel

    @property
    def prefix(self) -> str:
        return self.header.stem

    @property
    def out_dir(self) -> Path:
        return self.header.parent


def export_c(
    module: nn.Module,
    out_dir: str | os.PathLike,
    *,
    weights: str = "float32",
    prefix: str = "model",
    with_main: bool = False,
    gates: str = "rational",
    resync_every: int = RESYNC_EVERY,
) -> CExport:
    r"""Write a trained delta GRU/LSTM stack (and its linear head) as C99 for a small device.

    Writes ``<prefix>.h`` and ``<prefix>.c`` (and ``<prefix>_main.c`` with ``with_main``) into
    ``out_dir``. The C step computes, per frame and layer, what the spec computes
    (:func:`deltarnn.functional.delta_gru` / ``delta_lstm`` with T = 1, as every streamer does)::

        sent where not |x - x̂| <= Θx (a NaN change is sent);  Δx = x - x̂ where sent, else 0
        x̂ = x where sent;  Δh, ĥ likewise from h_{t-1} against ĥ with Θh
        M += W_ih Δx + W_hh Δh   (only the columns of sent deltas are read)
        on a re-sync step instead M = W_ih x̂ + W_hh ĥ + b   (:mod:`deltarnn.functional.state`)
        gates from M (GRU r|z|n, LSTM i|f|g|o); out = head(h) or h of the last layer

    The files need no library and allocate nothing: weights are ``static const`` arrays in the
    column-contiguous layout (input j's G*H weights are one row), the state is a struct the caller
    owns, and the API is ``<prefix>_reset(state*)`` and
    ``<prefix>_step(state*, const float *frame, float *out)``; the state also holds the send
    counts of the last step. With the default ``gates="rational"`` there is no ``#include`` but
    the model's own header (tanh and sigmoid are the CPU engine's float32 rational
    approximations); ``gates="libm"`` uses ``tanhf``/``expf`` from ``<math.h>``.

    Files are written to a temporary folder and renamed into place, so a failed export leaves
    ``out_dir`` as it was.

    Args:
        module: a :class:`~deltarnn.DeltaGRU` or :class:`~deltarnn.DeltaLSTM` (or a cell), float32,
            or a model with one as ``rnn`` and an ``nn.Linear`` ``head`` (a trained
            ``deltarnn.train.SequenceModel``: the head is applied to every frame).
        out_dir: folder to write into (created if missing; other files in it are kept).
        weights: ``"float32"`` or ``"int8"`` (one float32 scale per column, as
            :func:`deltarnn.ops.int8.quantize_columns`: a quarter of the weight bytes).
        prefix: a C identifier naming the files, the functions and the state type.
        with_main: also write ``<prefix>_main.c``, a driver that reads frames from a binary file
            and writes the outputs and send counts.
        gates: ``"rational"`` or ``"libm"``.
        resync_every: the memories are recomputed densely from x̂ and ĥ every this many steps
            (one dense product; 0: never on a schedule), and always at a step after a memory
            became non-finite or huge, as the streamer does (:mod:`deltarnn.functional.state`).

    Returns:
        :class:`CExport` with the paths written and the :class:`MemoryReport`.

    Raises:
        ConfigError, ShapeError, DTypeError, ThresholdError: a model the C step cannot reproduce
            (see :func:`deltarnn.export.read_model`), or a bad ``prefix``/``weights``/``gates``.
    """
    _check_prefix(prefix)
    model = read_model(module, weights=weights, gates=gates, resync_every=resync_every)
    report = memory_report(model)
    texts = {
        f"{prefix}.h": c_source.header(model, report, prefix),
        f"{prefix}.c": c_source.source(model, report, prefix),
    }
    if with_main:
        texts[f"{prefix}_main.c"] = c_source.driver(model, prefix)
    out = Path(out_dir)
    _write_all(out, texts)
    log.info("wrote %s to %s", ", ".join(texts), out)
    driver = out / f"{prefix}_main.c" if with_main else None
    return CExport(out / f"{prefix}.h", out / f"{prefix}.c", driver, report, model)


def _check_prefix(prefix: str) -> None:
    if (
        not isinstance(prefix, str)
        or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,30}", prefix)
        or prefix in _C_KEYWORDS
        or prefix.startswith("__")
    ):
        raise ConfigError(
            "prefix must be a C identifier of at most 31 characters (letters, digits, _; not "
            f"a keyword, not starting with a digit or '__'), got {prefix!r}"
        )


def _write_all(out: Path, texts: dict[str, str]) -> None:
    """Write every file or none: into a temporary folder first, then renamed into place."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir {out} exists and is not a folder")
    parent = out if out.is_dir() else out.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=parent))
    try:
        for name, text in texts.items():
            (tmp / name).write_text(text)
        if out.is_dir():
            for name in texts:
                os.replace(tmp / name, out / name)
        else:
            os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
