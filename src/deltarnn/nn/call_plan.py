"""One-frame calls (``module.stream`` at T = 1, the cells) without rebuilding anything per call.

A call through the generic path (``_DeltaRNNBase._run``) checks every parameter, resolves the
backend, converts the thresholds, looks up the packed weights and copies the state in: about
100 µs of Python per layer at batch 1, several times the compiled step itself. A
:class:`CallPlan` holds all of that for one batch size of a module on the cpu backend (one
:class:`deltarnn.ops.cpu.LayerCall` per layer), so that a call that fits it costs a few cheap
checks, a copy of the state and the compiled step.

A plan is used while none of the module's parameters and thresholds changed since it was built
(a :class:`~deltarnn.nn.watch.TensorWatch`: replaced, re-pointed or written in place); then it is
rebuilt. Inference tensors keep no version counter, so a module whose parameters or thresholds
are inference tensors gets no plan (the modules create theirs as normal tensors, even inside
``torch.inference_mode()``). The functional contract is the generic path's: the state passed in
is copied, never modified, and the returned state is new.

A call takes the generic path instead (which also raises the specific errors) when it needs
gradients, is being captured (compile, export, trace), has training transforms, dropout in
training, deterministic mode, a backend other than cpu, or an input or state that fails a
cheap check.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..functional import DeltaCounts
from ..ops import select_backend
from . import capture
from . import validate as V
from .watch import TensorWatch

# Batch sizes whose plans a module keeps (the oldest is dropped).
MAX_PLANS = 8


class PlanCache(dict):
    """A module's plans by batch size; a copy or pickle of the module starts with none (a plan
    holds a lock and arrays of the original's parameters)."""

    def __reduce__(self):
        return (PlanCache, ())


class CallPlan:
    """What repeated calls of ``module`` at batch ``batch`` reuse (see the module docstring).

    Attributes:
        watch: the module's parameters and thresholds, as they were when the plan was built.
        layers: one ``LayerCall`` per layer, or ``None`` when such calls take the generic path.
    """

    def __init__(self, module: nn.Module, batch: int) -> None:
        sources = [s for k in range(module.num_layers) for s in module._layer_sources(k, True)]
        self.watch = TensorWatch(sources)
        self.layers = None
        like = module._like
        if any(t.is_inference() for t in self.watch.tensors) or module._compute_dtype != like.dtype:
            return
        try:
            V.check_parameters(module)
            backend = select_backend(module.backend, like.device, like.dtype, False)
        except Exception:  # noqa: BLE001 - the generic path raises it, with its message
            return
        if not hasattr(backend, "LayerCall"):
            return
        self.backend = backend.NAME
        self.np_dtype = np.dtype(str(like.dtype).removeprefix("torch."))
        self.hidden = module.hidden_size
        self.layers = [
            backend.LayerCall(
                module.mode, module._packed_weights(k, backend), *module.thresholds(k), batch
            )
            for k in range(module.num_layers)
        ]


def planned_call(
    module: nn.Module,
    x: Tensor,
    batch: int,
    frame_shape: tuple[int, ...],
    state: tuple,
    count: bool,
    out_shape: tuple[int, ...],
) -> tuple[Tensor, tuple, list[DeltaCounts] | None] | None:
    """One frame through every layer of ``module`` by its plan, or ``None`` when the call does
    not fit one (the caller then takes the generic path).

    Args:
        x: the frame as the caller got it; it must have exactly ``frame_shape``, which holds
            ``batch * input_size`` values in (B, I) order.
        state: one state per layer.
        out_shape: the shape of the returned output, ``batch * hidden_size`` values.

    Returns:
        ``(output, new state, counts per layer or None)``.
    """
    if (
        capture.capture_kind() is not None
        or module._x_transform is not None
        or module._h_transform is not None
        or (module.training and module.dropout and module.num_layers > 1)
    ):
        return None
    plans = module._plans
    plan = plans.get(batch)
    if plan is None or plan.watch.changed():
        plan = CallPlan(module, batch)
        plans.pop(batch, None)
        plans[batch] = plan
        while len(plans) > MAX_PLANS:
            del plans[next(iter(plans))]
    layers = plan.layers
    if layers is None or not isinstance(x, Tensor) or x.shape != frame_shape:
        return None
    if torch.is_grad_enabled() and (
        x.requires_grad or any(t.requires_grad for t in plan.watch.tensors)
    ):
        return None
    try:
        frame = x.numpy()
    except (RuntimeError, TypeError):  # not on the CPU (gradients were ruled out above)
        return None
    if frame.dtype != plan.np_dtype:
        return None
    frame = np.ascontiguousarray(frame).reshape(1, batch, -1)
    if not isinstance(state, tuple) or len(state) != len(layers):
        return None
    kept = [layer.kept_block(s) for layer, s in zip(layers, state, strict=True)]
    if any(block is None for block in kept):
        module._check_state(state, batch)  # a state it did not return: the full check
    if module.last_backend != plan.backend:
        module.__dict__["last_backend"] = plan.backend  # nn.Module.__setattr__ costs µs
    output = np.empty(out_shape, plan.np_dtype)
    last = len(layers) - 1
    new_states, counts = [], []
    for k, layer in enumerate(layers):
        out = output.reshape(1, batch, -1) if k == last else None
        frame, s, c = layer.run(frame, state[k], count, out, kept[k])
        new_states.append(s)
        counts.append(c)
    return torch.from_numpy(output), tuple(new_states), (counts if count else None)
