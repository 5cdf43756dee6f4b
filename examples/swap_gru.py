"""Swap torch.nn.GRU for a delta GRU on a real recording and print what it saves.

Run from the repository root: ``.venv/bin/python examples/swap_gru.py`` (DELTARNN_DATA must point
at a folder holding fsdd/recordings; ``make`` sets it to ../shared/data). ``--download`` fetches
the recordings into the data root first when they are not there.
"""

import sys

import torch

import deltarnn
from deltarnn.data import list_recordings, load_audio, log_mel

torch.manual_seed(0)
# A clear error (DataNotFoundError) naming where the data was looked for, if it is not there.
recordings = {r.path.name: r.path for r in list_recordings(download="--download" in sys.argv)}
wave, rate = load_audio(recordings["7_jackson_0.wav"])
x = torch.from_numpy(log_mel(wave, rate)).unsqueeze(1)  # (T, B=1, 40) log-mel frames
x = (x - x.mean(0)) / x.std(0)  # per-band standardisation

gru = torch.nn.GRU(40, 256, num_layers=2)  # your (trained) torch model
delta = deltarnn.from_torch(gru, theta_x=0.2, theta_h=0.1)  # same weights, plus thresholds
out, h_n = delta(x)  # exactly as torch.nn.GRU
print(deltarnn.measure(delta, x))  # what it saved, counted from the send masks
