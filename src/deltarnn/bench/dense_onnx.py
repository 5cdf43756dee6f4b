"""The dense baseline a deployment engineer would pick: ``nn.GRU``/``LSTM`` in onnxruntime.

The torch module is exported once (``torch.onnx.export``, the dynamo exporter, which emits ONNX's
own ``GRU``/``LSTM`` operators) as one step, ``(x (1, B, I), h [, c]) -> (y, h [, c])``, and run
by an onnxruntime CPU session, one frame per call, the state fed back. Needs the ``bench`` extra
(``onnx``, ``onnxscript``, ``onnxruntime``).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


class _Step(nn.Module):
    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, *hx):
        if isinstance(self.rnn, nn.LSTM):
            y, (h, c) = self.rnn(x, hx)
            return y, h, c
        y, h = self.rnn(x, hx[0])
        return y, h


def export_step(rnn: nn.Module, batch: int) -> bytes:
    """The ONNX model (serialised) of one step of ``rnn`` at batch ``batch``."""
    lstm = isinstance(rnn, nn.LSTM)
    shape = (rnn.num_layers, batch, rnn.hidden_size)
    hx = (torch.zeros(shape), torch.zeros(shape)) if lstm else (torch.zeros(shape),)
    x = torch.zeros(1, batch, rnn.input_size)
    names = ["h", "c"][: len(hx)]
    # A copy: export reassigns the module's flat weights, which sends later torch calls of the
    # module down a slow path.
    with torch.no_grad():
        program = torch.onnx.export(
            _Step(copy.deepcopy(rnn)).eval(),
            (x, *hx),
            input_names=["x", *names],
            output_names=["y", *(n + "_n" for n in names)],
            dynamo=True,
            verbose=False,
        )
    return program.model_proto.SerializeToString()


class OnnxStep:
    """One onnxruntime session stepping a stream: :meth:`start`, then :meth:`step` per frame.

    Args:
        rnn: ``nn.GRU`` or ``nn.LSTM`` (unidirectional, no projections).
        batch: B of every frame.
        n_threads: onnxruntime intra-op threads (one inter-op thread, sequential execution).
    """

    def __init__(self, rnn: nn.Module, batch: int, n_threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            export_step(rnn, batch), options, providers=["CPUExecutionProvider"]
        )
        self.lstm = isinstance(rnn, nn.LSTM)
        self.shape = (rnn.num_layers, batch, rnn.hidden_size)
        self.batch, self.input_size = batch, rnn.input_size

    def start(self) -> None:
        zeros = np.zeros(self.shape, np.float32)
        self.feed = {"h": zeros, "c": zeros.copy()} if self.lstm else {"h": zeros}

    def step(self, frame: np.ndarray) -> np.ndarray:
        """frame (B, I) float32 -> the last layer's h (B, H)."""
        self.feed["x"] = frame.reshape(1, self.batch, self.input_size)
        outs = self.session.run(None, self.feed)
        self.feed["h"] = outs[1]
        if self.lstm:
            self.feed["c"] = outs[2]
        return outs[0][0]
