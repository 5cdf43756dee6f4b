"""An independent, element-by-element implementation of docs/equations.rst in NumPy (float64).

Written from the equations without sharing code with the package, so that the package's spec
can be tested against it. Deliberately naive: loops over steps, samples and units.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _delta(value, last_sent, theta):
    """Per element: send when the change since the last sent value strictly exceeds theta."""
    delta = np.zeros_like(value)
    sent = last_sent.copy()
    for i in range(value.shape[0]):
        change = value[i] - last_sent[i]
        if abs(change) > theta[i]:
            delta[i] = change
            sent[i] = value[i]
    return delta, sent


def delta_rnn(kind, x, w_ih, w_hh, b_ih, b_hh, theta_x, theta_h, h0=None, c0=None):
    """One layer over x (T, B, I); returns outputs (T, B, H) and the masks (T, B, I), (T, B, H)."""
    steps, batch, inputs = x.shape
    hidden = w_hh.shape[1]
    theta_x = np.broadcast_to(theta_x, (inputs,))
    theta_h = np.broadcast_to(theta_h, (hidden,))
    out = np.zeros((steps, batch, hidden))
    sent_x = np.zeros((steps, batch, inputs), dtype=bool)
    sent_h = np.zeros((steps, batch, hidden), dtype=bool)
    for b in range(batch):
        h = np.zeros(hidden) if h0 is None else h0[b].copy()
        c = np.zeros(hidden) if c0 is None else c0[b].copy()
        x_hat, h_hat = np.zeros(inputs), np.zeros(hidden)
        if kind == "GRU":
            mem = {
                "r": b_ih[:hidden] + b_hh[:hidden],
                "z": b_ih[hidden : 2 * hidden] + b_hh[hidden : 2 * hidden],
                "xn": b_ih[2 * hidden :].copy(),
                "hn": b_hh[2 * hidden :].copy(),
            }
        else:
            mem = b_ih + b_hh
        for t in range(steps):
            dx, x_hat = _delta(x[t, b], x_hat, theta_x)
            dh, h_hat = _delta(h, h_hat, theta_h)
            sent_x[t, b], sent_h[t, b] = dx != 0, dh != 0
            if kind == "GRU":
                for gate, rows in (("r", slice(0, hidden)), ("z", slice(hidden, 2 * hidden))):
                    mem[gate] = mem[gate] + w_ih[rows] @ dx + w_hh[rows] @ dh
                mem["xn"] = mem["xn"] + w_ih[2 * hidden :] @ dx
                mem["hn"] = mem["hn"] + w_hh[2 * hidden :] @ dh
                r, z = _sigmoid(mem["r"]), _sigmoid(mem["z"])
                n = np.tanh(mem["xn"] + r * mem["hn"])
                h = (1 - z) * n + z * h
            else:
                mem = mem + w_ih @ dx + w_hh @ dh
                i, f = _sigmoid(mem[:hidden]), _sigmoid(mem[hidden : 2 * hidden])
                g, o = np.tanh(mem[2 * hidden : 3 * hidden]), _sigmoid(mem[3 * hidden :])
                c = f * c + i * g
                h = o * np.tanh(c)
            out[t, b] = h
    return out, sent_x, sent_h
