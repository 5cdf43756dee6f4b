"""The dense recipe search of the FSDD experiment: one dense 2-layer GRU (torch's, which the
delta GRU at Θ = 0 equals) trained with a choice of augmentations, scored on a validation
speaker only (the test speaker of the fold is never loaded into a model).

    python experiments/fsdd/recipe_search.py --test yweweler --val george --epochs 20 \
        --speeds 0.9,1.0,1.1

Prints the validation accuracy every 5 epochs, the confusion matrix and a JSON line.
"""

import argparse
import json
import math
import time

import torch
from torch import nn

from deltarnn.data import FeatureNormalizer, FeatureParams, list_recordings, split_by_speaker
from deltarnn.data.augment import FeatureAugment, pick_versions, speed_perturbed_features
from deltarnn.data.features import make_cache

p = argparse.ArgumentParser()
p.add_argument("--test", default="theo")
p.add_argument("--val", default="yweweler")
p.add_argument("--hidden", type=int, default=128)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--dropout", type=float, default=0.0)
p.add_argument("--in_dropout", type=float, default=0.0)
p.add_argument("--speeds", default="1.0")
p.add_argument("--tempo", default="1,1")
p.add_argument("--tmasks", type=int, default=0)
p.add_argument("--fmasks", type=int, default=0)
p.add_argument("--fwidth", type=int, default=6)
p.add_argument("--twidth", type=int, default=10)
p.add_argument("--wd", type=float, default=0.0)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--bs", type=int, default=64)
a = p.parse_args()
torch.set_num_threads(a.threads)
recs = list_recordings()
sp = split_by_speaker(recs, test_speakers=[a.test], val_speakers=[a.val])
params = FeatureParams()
cache = make_cache(True, None)
speeds = [float(s) for s in a.speeds.split(",")]
train_versions = [
    speed_perturbed_features([r.path for r in sp.train], params, s, cache) for s in speeds
]
val_feats = speed_perturbed_features([r.path for r in sp.val], params, 1.0, cache)


def cmn(f):
    return f - f.mean(0)


norm = FeatureNormalizer.fit([cmn(f) for f in train_versions[speeds.index(1.0)]])


def prep(f):
    return torch.as_tensor(norm(cmn(f)), dtype=torch.float32)


ytr = torch.tensor([r.digit for r in sp.train])
yva = torch.tensor([r.digit for r in sp.val])
aug = FeatureAugment(
    tempo=tuple(float(v) for v in a.tempo.split(",")),
    time_masks=a.tmasks,
    freq_masks=a.fmasks,
    freq_width=a.fwidth,
    time_width=a.twidth,
)


class M(nn.Module):
    def __init__(s):
        super().__init__()
        s.rnn = nn.GRU(40, a.hidden, a.layers, dropout=a.dropout)
        s.drop = nn.Dropout(a.dropout)
        s.indrop = nn.Dropout(a.in_dropout)
        s.head = nn.Linear(a.hidden, 10)

    def forward(s, x, lengths):
        out, _ = s.rnn(s.indrop(x))
        mask = (torch.arange(x.shape[0])[:, None] < lengths[None]).float()
        pooled = (out * mask[..., None]).sum(0) / lengths[:, None].float()
        return s.head(s.drop(pooled))


def batchify(xs):
    lengths = torch.tensor([len(x) for x in xs])
    return nn.utils.rnn.pad_sequence(xs), lengths


torch.manual_seed(a.seed)
model = M()
opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=a.wd)
g = torch.Generator().manual_seed(a.seed)
n = len(ytr)
steps_per = math.ceil(n / a.bs)
total = steps_per * a.epochs
step = 0
val_x = [prep(f) for f in val_feats]


def evaluate():
    model.eval()
    correct = 0
    with torch.no_grad():
        order = sorted(range(len(val_x)), key=lambda i: len(val_x[i]))
        for i in range(0, len(order), 250):
            idx = order[i : i + 250]
            x, L = batchify([val_x[j] for j in idx])
            correct += int((model(x, L).argmax(-1) == yva[idx]).sum())
    model.train()
    return correct / len(val_x)


t0 = time.time()
hist = []
for ep in range(a.epochs):
    feats = pick_versions(train_versions, g)
    perm = torch.randperm(n, generator=g).tolist()
    # bucket by length within groups of 8 batches
    batches = []
    for s in range(0, n, 8 * a.bs):
        chunk = sorted(perm[s : s + 8 * a.bs], key=lambda i: len(feats[i]))
        batches += [chunk[i : i + a.bs] for i in range(0, len(chunk), a.bs)]
    order = torch.randperm(len(batches), generator=g).tolist()
    tl = 0
    for bi in order:
        idx = batches[bi]
        x, L = batchify([aug(prep(feats[i]), g) for i in idx])
        lr = a.lr * 0.5 * (1 + math.cos(math.pi * step / total))
        for gr in opt.param_groups:
            gr["lr"] = lr
        loss = nn.functional.cross_entropy(model(x, L), ytr[idx])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tl += float(loss.detach()) * len(idx)
    if (ep + 1) % 5 == 0 or ep == a.epochs - 1:
        v = evaluate()
        hist.append((ep + 1, round(tl / n, 4), v))
        print(f"ep {ep + 1} loss {tl / n:.4f} val {v:.4f} t {time.time() - t0:.0f}s", flush=True)
model.eval()
with torch.no_grad():
    x, L = batchify(val_x)
    pred = model(x, L).argmax(-1)
conf = torch.zeros(10, 10, dtype=torch.long)
for t_, p_ in zip(yva.tolist(), pred.tolist(), strict=True):
    conf[t_, p_] += 1
print("confusion (rows true)\n", conf.numpy())
print(json.dumps({"args": vars(a), "val": hist[-1][2], "hist": hist, "seconds": time.time() - t0}))
