"""One-frame calls (``module.stream`` at T = 1, the cells) without rebuilding anything per call.

A call through the generic path (``_DeltaRNNBase._run``) checks every parameter, resolves the
backend, converts the thresholds, looks up the packed weights and copies the state in: about
100 µs of Python per layer at batch 1, several times the compiled step itself. A
:class:`CallPlan` holds all of that for one batch size of a module on the cpu backend (the
module's :class:`deltarnn.ops.cpu_stream.StackStreamer`, whose ``advance`` is the functional
form of a streamer's step), so that a call that fits it costs a few cheap checks, a copy of the
state in and out, and one compiled call for the whole layer stack.

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

import threading

import torch
from torch import Tensor, nn

from ..functional import DeltaCounts
from ..ops import LayerParams, select_backend
from . import capture
from . import validate as V
from .watch import TensorWatch

# Batch sizes whose plans a module keeps (the oldest is dropped).
MAX_PLANS = 8
_STRIDED = torch.strided  # a module global: one lookup instead of two per call


class PlanCache(dict):
    """A module's plans by batch size; a copy or pickle of the module starts with none (a plan
    holds a lock and arrays of the original's parameters)."""

    def __reduce__(self):
        return (PlanCache, ())


class CallPlan:
    """What repeated calls of ``module`` at batch ``batch`` reuse (see the module docstring).

    Attributes:
        watch: the module's parameters and thresholds, as they were when the plan was built.
        engine: the cpu backend's stack streamer of the module's layers
            (:class:`deltarnn.ops.cpu_stream.StackStreamer`), whose ``advance`` a call runs; or
            ``None`` when such calls take the generic path.
    """

    def __init__(self, module: nn.Module, batch: int) -> None:
        sources = [s for k in range(module.num_layers) for s in module._layer_sources(k, True)]
        self.watch = TensorWatch(sources)
        self.engine = None
        like = module._like
        if any(t.is_inference() for t in self.watch.tensors) or module._compute_dtype != like.dtype:
            return
        try:
            V.check_parameters(module)
            backend = select_backend(module.backend, like.device, like.dtype, False)
        except Exception:  # noqa: BLE001 - the generic path raises it, with its message
            return
        if backend.NAME != "cpu":
            return
        self.backend = backend.NAME
        self.dtype = like.dtype
        self.lock = threading.Lock()  # the engine's buffers serve one call at a time
        self.outputs: dict[tuple, Tensor] = {}  # an empty tensor of each output shape seen
        with torch.no_grad():
            layers = [
                LayerParams(*(None if t is None else t.detach() for t in params))
                for params in (
                    (*module.layer_weights(k), *module.thresholds(k))
                    for k in range(module.num_layers)
                )
            ]
            initial = module.initial_state(batch)  # also what a call without a state starts from
            # the module's own packed copy, shared with its calls over whole sequences
            packed = [module._packed_weights(k, backend) for k in range(module.num_layers)]
        # No periodic re-sync: the generic path's rule (the memory bound only).
        self.engine = backend.StackStreamer(
            module.mode, layers, initial, resync_every=0, packed=packed
        )


def planned_call(
    module: nn.Module,
    x: Tensor,
    batch: int,
    frame_shape: tuple[int, ...],
    state: tuple | None,
    count: bool,
    out_shape: tuple[int, ...],
) -> tuple[Tensor, tuple, list[DeltaCounts] | None] | None:
    """One frame through every layer of ``module`` by its plan, or ``None`` when the call does
    not fit one (the caller then takes the generic path).

    Args:
        x: the frame as the caller got it; it must have exactly ``frame_shape``, which holds
            ``batch * input_size`` values in (B, I) order.
        state: one state per layer, or ``None`` for a fresh stream (the module's initial
            state).
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
    engine = plan.engine
    if (
        engine is None
        or not isinstance(x, Tensor)
        or x.shape != frame_shape
        or x.dtype is not plan.dtype
        or not x.is_cpu
        or x.layout is not _STRIDED
        or not x.is_contiguous()
    ):
        return None
    if torch.is_grad_enabled() and (
        x.requires_grad or any(t.requires_grad for t in plan.watch.tensors)
    ):
        return None
    if state is None:  # a fresh stream: the engine's initial state (the module's, when built)
        check = None
    elif isinstance(state, tuple) and len(state) == module.num_layers:
        check = lambda s: module._check_state(s, batch)  # noqa: E731 - only if it is needed
    else:
        return None
    lock = plan.lock
    if not lock.acquire(False):  # (positional: a keyword argument costs more)
        return None  # another thread is in a call of this plan: the generic path
    try:
        template = plan.outputs.get(out_shape)
        if template is None:
            template = plan.outputs[out_shape] = torch.empty(out_shape, dtype=plan.dtype)
        output = torch.empty_like(template)  # faster than torch.empty(shape)
        new_state, counts = engine.advance(x, state, output, count, check=check)
    finally:
        lock.release()
    if module.last_backend != plan.backend:
        module.__dict__["last_backend"] = plan.backend  # nn.Module.__setattr__ costs µs
    return output, new_state, counts
