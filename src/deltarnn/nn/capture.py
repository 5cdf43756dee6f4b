"""What the delta modules do while a graph is captured: compiled, exported, traced or scripted.

Eager calls run the backend ``backend=`` selects. While a graph is captured, a call runs

* ``torch.compile``, ``torch.export`` (and so the dynamo ONNX exporter's first stage):
  inference layers as the ``torch.library`` operators of :mod:`deltarnn.ops.custom_ops`, one
  node per layer whose shapes follow the input, so the graph is correct for any length and
  batch; calls that need gradients, training transforms, or ``backend="reference"``/``"fused"``
  as the functional spec, which is plain PyTorch;
* ``torch.jit.trace``: the operators too (the traced graph calls them, for any length). A call
  that would run the spec raises :class:`~deltarnn.errors.ExportError`: the tracer would unroll
  its loop over the example's T steps into a graph that is wrong for any other length;
* ONNX export (either exporter): :class:`~deltarnn.errors.ExportError`. ONNX has no operator
  for a delta layer, and an unrolled loop would be silently wrong on other lengths;
* ``torch.jit.script``: :class:`~deltarnn.errors.ExportError`; TorchScript cannot compile the
  modules (use ``torch.jit.trace``, ``torch.export`` or ``torch.compile``).

:class:`StreamStep` wraps a module's :meth:`stream` as a one-frame module, the form to give
``torch.export.export``.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch
from torch import Tensor, nn

from ..errors import BackendError, ExportError, ShapeError
from ..functional import DeltaGRUState, DeltaLSTMState
from ..ops import custom_ops
from ..ops import reference as reference_backend


def capture_kind() -> str | None:
    """``"onnx"``, ``"jit_trace"``, ``"compile"`` (torch.compile or torch.export), or ``None``.

    Eager calls pay two flag reads.
    """
    tracing = torch.jit.is_tracing()
    if not (tracing or torch.compiler.is_compiling()):
        return None
    if _onnx_exporting():
        return "onnx"
    return "jit_trace" if tracing else "compile"


def _onnx_exporting() -> bool:
    # Dynamo folds torch.onnx.is_in_onnx_export() to False, so the dynamo exporter's strict
    # attempt would pass unseen; the flag behind it dynamo reads as it is.
    flags = sys.modules.get("torch.onnx._internal.exporter._flags")
    return torch.onnx.is_in_onnx_export() or bool(flags is not None and flags._is_onnx_exporting)


def captured_backend(
    module: nn.Module, kind: str, device: torch.device, needs_grad: bool, transformed: bool
) -> ModuleType:
    """The backend a layer call of ``module`` runs while a ``kind`` capture is under way."""
    name = type(module).__name__
    if kind == "onnx":
        raise ExportError(
            f"{name} cannot be exported to ONNX: ONNX has no delta-RNN operator, and unrolling "
            "the recurrence would fix the sequence length of the example input. Export the "
            "dense network (deltarnn.to_torch(module)), or use torch.export.export"
        )
    spec = transformed or module.backend in ("reference", "fused")
    if kind == "jit_trace" and spec:
        raise ExportError(
            f"torch.jit.trace cannot record {name} with backend={module.backend!r}"
            f"{' and training transforms' if transformed else ''}: it would unroll the loop "
            "over the example's time steps, wrong for any other length. Trace with "
            "backend='auto' (or 'cpu'/'triton') and no training transforms, or use "
            "torch.export.export"
        )
    if spec or (needs_grad and kind == "compile"):
        return reference_backend
    if module.backend == "cpu" and device.type != "cpu":
        raise BackendError(f"backend 'cpu' cannot run on device={device}")
    if module.backend == "triton" and device.type != "cuda":
        raise BackendError(f"backend 'triton' cannot run on device={device} while capturing")
    return custom_ops


class CaptureGuards:
    """Mixin of the delta modules: refuse ``torch.jit.script`` with a clear error."""

    def __prepare_scriptable__(self):
        raise ExportError(
            f"torch.jit.script cannot compile {type(self).__name__} (its layers run compiled "
            "kernels with a typed state TorchScript cannot express). Use torch.jit.trace, "
            "torch.export.export or torch.compile; their limits are in the README, 'Export "
            "and compile'"
        )


class StreamStep(nn.Module):
    r"""One frame of a stream as a module on plain tensors: ``(frame, *state) -> (output, *state)``.

    The form in which a delta RNN is exported with ``torch.export.export``: the whole state
    (h, [c], x̂, ĥ, memories of every layer) is an input and an output, flattened to a tuple of
    tensors in layer order (each layer's fields in the order of its state type), and nothing is
    held between calls. Exported under ``torch.no_grad()`` each layer is one operator node;
    with gradients on, the spec's PyTorch operations for the one step are recorded instead
    (also correct for every frame, and slower)::

        step = StreamStep(model)
        state = step.flatten(model.initial_state(batch))
        with torch.no_grad():
            program = torch.export.export(step, (frame, *state))
        out, *state = program.module()(frame, *state)
        model.stream(more_frames, step.unflatten(state))  # resume eagerly, if wanted

    Args:
        module: a :class:`~deltarnn.DeltaGRU` or :class:`~deltarnn.DeltaLSTM`.

    Inputs: ``frame, *state``
        frame: (B, I). state: :meth:`flatten` of a state of ``module.stream``.

    Outputs: ``(output, *state)``
        output: the last layer's h, (B, H); then the flattened state after the frame.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._state_type = DeltaGRUState if module.mode == "GRU" else DeltaLSTMState
        self._fields = len(self._state_type._fields)

    def flatten(self, state: tuple) -> tuple[Tensor, ...]:
        """A per-layer state as one flat tuple of tensors (each with the batch first: a 0-d
        ``since_sync`` is expanded to (B,))."""
        return tuple(
            t.expand(layer.h.shape[0]).clone() if t.dim() == 0 else t
            for layer in state
            for t in layer
        )

    def unflatten(self, tensors) -> tuple:
        """The inverse of :meth:`flatten`: the per-layer state tuple ``module.stream`` takes."""
        tensors = tuple(tensors)
        expected = self.module.num_layers * self._fields
        if len(tensors) != expected:
            raise ShapeError(
                f"state must be {expected} tensors ({self.module.num_layers} layers of "
                f"{self._state_type.__name__}), got {len(tensors)}"
            )
        n = self._fields
        return tuple(
            self._state_type(*tensors[k * n : (k + 1) * n]) for k in range(self.module.num_layers)
        )

    def forward(self, frame: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        if not isinstance(frame, Tensor) or frame.dim() != 2:
            raise ShapeError(
                f"frame must be 2-D (B, input_size), got "
                f"{tuple(frame.shape) if isinstance(frame, Tensor) else type(frame).__name__}"
            )
        first = 1 if self.module.batch_first else 0
        out, new_state = self.module.stream(frame.unsqueeze(first), self.unflatten(state))
        return (out.squeeze(first), *self.flatten(new_state))
