"""The trained network of the streaming benchmark: a 2-layer GRU on FSDD at its best Θ.

Protocol, all with :func:`deltarnn.train.train` (what ``deltarnn train`` runs), into one folder:

* Data: FSDD's take split with a validation split: takes 0-4 of every speaker and digit are the
  test set (300 recordings, the ones the benchmark streams), takes 5-9 validation, 10-49 train.
* ``dense/``: the GRU trained dense (Θ = 0).
* ``delta-<Θ>/`` for each Θ of :data:`THETAS`: retrained from the dense weights as a delta
  network at Θx = Θh = Θ, with a one-epoch threshold warm-up (the method of the FSDD
  experiment's best configurations).
* ``selection.json``, written last: the largest Θ whose **validation** accuracy is within 1 pp of
  the dense model's, with every validation and test accuracy. A folder without it is not a
  finished selection: its runs are resumed (each run folder is complete or refused).

A folder made elsewhere (``deltarnn train``) can be used as it is by naming its Θ.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)

THETAS = (0.1, 0.2, 0.3, 0.4, 0.5)
WITHIN = 0.01  # largest validation accuracy loss against dense, as a fraction
SELECTION = "selection.json"


@dataclasses.dataclass(frozen=True)
class FSDDModelConfig:
    """Sizes and budgets of the benchmark's FSDD model (a few minutes on two cores)."""

    hidden_size: int = 128
    num_layers: int = 2
    dense_epochs: int = 8
    delta_epochs: int = 2
    batch_size: int = 64
    seed: int = 0
    thetas: tuple[float, ...] = THETAS
    root: str | None = None


def _train_config(cfg: FSDDModelConfig, theta: float, init_from: str | None):
    from ..train import TrainConfig

    base = TrainConfig()
    return dataclasses.replace(
        base,
        model=dataclasses.replace(
            base.model,
            kind="gru",
            num_layers=cfg.num_layers,
            hidden_size=cfg.hidden_size,
            theta_x=theta,
            theta_h=theta,
        ),
        method=dataclasses.replace(
            base.method,
            delta=init_from is not None,
            theta_warmup_epochs=1.0 if init_from is not None else 0.0,
            init_from=init_from,
        ),
        data=dataclasses.replace(
            base.data,
            task="digits",
            split="take",
            val_takes=[5, 6, 7, 8, 9],
            batch_size=cfg.batch_size,
            root=cfg.root,
        ),
        epochs=cfg.delta_epochs if init_from is not None else cfg.dense_epochs,
        seed=cfg.seed,
    ).validate()


def prepare(folder: str | Path, cfg: FSDDModelConfig = FSDDModelConfig()) -> dict:
    """Train (or resume) the runs of the protocol in ``folder`` and write ``selection.json``.

    Returns the selection (also when it was already there).
    """
    from ..train import evaluate_run, load_model, train

    folder = Path(folder)
    done = folder / SELECTION
    if done.is_file():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    runs = {0.0: folder / "dense"}
    log.info("FSDD streaming model: training %s", runs[0.0])
    train(_train_config(cfg, 0.0, None), runs[0.0], progress=False)
    for theta in cfg.thetas:
        runs[theta] = folder / f"delta-{theta:g}"
        log.info("FSDD streaming model: training %s", runs[theta])
        train(_train_config(cfg, theta, str(runs[0.0])), runs[theta], progress=False)
    accuracy = {}
    for theta, run in runs.items():
        model, _, data = load_model(run)
        accuracy[theta] = {
            "val": evaluate_run(model, data, data.val).value,
            "test": evaluate_run(model, data, data.test).value,
        }
    dense_val = accuracy[0.0]["val"]
    within = [t for t in cfg.thetas if accuracy[t]["val"] >= dense_val - WITHIN]
    theta = max(within) if within else 0.0
    selection = {
        "theta": theta,
        "run": runs[theta].name,
        "rule": f"largest Θ with validation accuracy >= dense - {100 * WITHIN:g} pp",
        "accuracy": {f"{t:g}": a for t, a in accuracy.items()},
        "config": dataclasses.asdict(cfg),
    }
    tmp = done.with_name(done.name + ".tmp")
    tmp.write_text(json.dumps(selection, indent=1) + "\n")
    tmp.replace(done)
    return json.loads(done.read_text())  # as a later call reads it


def load(folder: str | Path, theta: float | None = None) -> tuple[nn.Module, float, list, dict]:
    """The benchmark's network from ``folder``: ``(nn.GRU, Θ, test streams, info)``.

    ``folder`` holds a finished :func:`prepare` (its selected run is used), or is itself a
    finished ``deltarnn train`` run, whose Θ must then be given. Test streams are the test
    recordings' normalised features, each (T_i, 1, I).
    """
    from ..nn import to_torch
    from ..train import load_model

    folder = Path(folder)
    info: dict = {}
    if (folder / SELECTION).is_file():
        info = json.loads((folder / SELECTION).read_text())
        run = folder / info["run"]
        theta = info["theta"] if theta is None else theta
    else:
        if theta is None:
            raise ConfigError(
                f"{folder} has no {SELECTION}: name the Θ to run its model at (--fsdd-theta)"
            )
        run = folder
    model, _, data = load_model(run)
    dense = to_torch(model.rnn).eval()
    streams = [data.test[i][0].unsqueeze(1).contiguous() for i in range(len(data.test))]
    info = {**info, "run": str(run), "theta": theta}
    return dense, float(theta), streams, info
