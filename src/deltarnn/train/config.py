"""Typed training configuration: dataclasses, loaded from JSON/TOML files or ``key=value`` flags.

A config is saved as ``config.json`` beside every checkpoint and result, and
``TrainConfig.from_dict(json.load(...))`` restores it exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .methods import MAX_BITS

Theta = float | list[float]


@dataclasses.dataclass
class ModelConfig:
    """Features -> delta RNN layers -> linear head.

    Attributes:
        kind: ``"gru"`` or ``"lstm"``.
        num_layers, hidden_size: of the recurrent stack.
        theta_x, theta_h: thresholds used in evaluation (and in training for delta methods); a
            float for every layer or a list with one per layer.
        pool: classification head input: ``"mean"`` over valid frames or ``"last"`` valid frame.
        backend: delta backend for runs without gradients (``"auto"`` picks the fastest).
        dropout: dropout on the outputs of every layer but the last, in training (as torch's).
    """

    kind: str = "gru"
    num_layers: int = 2
    hidden_size: int = 64
    theta_x: Theta = 0.0
    theta_h: Theta = 0.0
    pool: str = "mean"
    backend: str = "auto"
    dropout: float = 0.0

    def validate(self) -> None:
        _choice("model.kind", self.kind, ("gru", "lstm"))
        _choice("model.pool", self.pool, ("mean", "last"))
        _positive("model.num_layers", self.num_layers)
        _positive("model.hidden_size", self.hidden_size)
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("theta_x", "theta_h"):
            values = getattr(self, name)
            values = values if isinstance(values, list) else [values]
            if isinstance(getattr(self, name), list) and len(values) != self.num_layers:
                raise ConfigError(
                    f"model.{name} must be a float or a list of num_layers={self.num_layers} "
                    f"floats, got {values}"
                )
            for v in values:
                if not _is_number(v) or not (math.isfinite(v) and v >= 0):
                    raise ConfigError(f"model.{name} must be finite and >= 0, got {v!r}")


@dataclasses.dataclass
class MethodConfig:
    """Which training methods run, with their parameters (they combine freely).

    Attributes:
        delta: train with the thresholds of ``model`` in the forward pass (else dense, Θ = 0).
        theta_warmup_epochs: ramp Θ linearly from 0 over this many epochs (0: no ramp).
        init_from: a run folder or ``model.safetensors`` to start from (pretrain dense, retrain).
        rounding: round the inputs of the products to fixed point Q``int_bits``.``frac_bits``.
        noise_sigma: std of Gaussian noise on the inputs of the products in training (0: off).
        l1_x, l1_h: weights of the L1 cost on Δx and Δh (per valid frame).
        learnable_theta: learn Θx and Θh (starting from ``model``'s, which must be > 0).
        occupancy_cost: weight of the surrogate occupancy cost that pushes learnable Θ up.
    """

    delta: bool = False
    theta_warmup_epochs: float = 0.0
    init_from: str | None = None
    rounding: bool = False
    int_bits: int = 3
    frac_bits: int = 5
    noise_sigma: float = 0.0
    l1_x: float = 0.0
    l1_h: float = 0.0
    learnable_theta: bool = False
    occupancy_cost: float = 0.0

    def validate(self) -> None:
        for name in ("theta_warmup_epochs", "noise_sigma", "l1_x", "l1_h", "occupancy_cost"):
            _non_negative(f"method.{name}", getattr(self, name))
        for name in ("int_bits", "frac_bits"):
            v = getattr(self, name)
            if not _is_int(v) or not 0 <= v <= MAX_BITS:
                raise ConfigError(f"method.{name} must be an int in [0, {MAX_BITS}], got {v!r}")
        if self.learnable_theta and not self.delta:
            raise ConfigError("method.learnable_theta needs method.delta = true")

    @property
    def needs_counts(self) -> bool:
        return bool(self.l1_x or self.l1_h)


@dataclasses.dataclass
class DataConfig:
    """Attributes:
    task: ``"digits"`` (isolated FSDD digits, 10 classes) or ``"strings"`` (connected digits,
        CTC with blank).
    split: ``"speaker"`` (held-out speakers) or ``"take"`` (FSDD's usual split).
    test_speakers: the held-out test speakers of the speaker split (empty: theo and yweweler).
    val_speakers: validation speakers of the speaker split (empty: no validation split).
    val_takes: validation takes of the take split (empty: none; the test takes are 0-4).
    root: data root (default ``$DELTARNN_DATA``).
    batch_size: the global batch, shared among data-parallel processes.
    limit_train, limit_test: use only N items of a split (0: all), for quick runs.
    num_strings: training strings for ``strings`` (validation and test get a quarter as many).
    utterance_norm: subtract each utterance's own mean per band before the global scaling
        (cepstral mean normalisation: removes the channel and speaker offset).
    """

    task: str = "digits"
    split: str = "speaker"
    test_speakers: list[str] = dataclasses.field(default_factory=list)
    val_speakers: list[str] = dataclasses.field(default_factory=list)
    val_takes: list[int] = dataclasses.field(default_factory=list)
    root: str | None = None
    batch_size: int = 32
    limit_train: int = 0
    limit_test: int = 0
    num_strings: int = 2000
    utterance_norm: bool = True

    @property
    def has_validation(self) -> bool:
        """Whether the config names a validation split."""
        return bool(self.val_speakers or self.val_takes)

    def validate(self) -> None:
        _choice("data.task", self.task, ("digits", "strings"))
        _choice("data.split", self.split, ("speaker", "take"))
        for name in ("batch_size", "num_strings"):
            _positive(f"data.{name}", getattr(self, name))
        for name in ("limit_train", "limit_test"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ConfigError(f"data.{name} must be an int >= 0 (0: all items), got {v!r}")
        if self.split == "take" and (self.val_speakers or self.test_speakers):
            raise ConfigError("data.val_speakers and data.test_speakers need data.split='speaker'")
        if self.split == "speaker" and self.val_takes:
            raise ConfigError("data.val_takes needs data.split='take'")


@dataclasses.dataclass
class OptimConfig:
    """Adam with weight decay, gradient-norm clipping and a cosine learning-rate decay.

    Attributes:
        lr: the initial learning rate.
        weight_decay: Adam's L2 weight decay (>= 0).
        grad_clip: clip the gradient norm to this (0: no clipping; negative is an error).
        cosine: decay the learning rate along a half cosine over all steps.
        lr_floor: the cosine ends at ``lr_floor * lr`` (a fraction in [0, 1]).
    """

    lr: float = 3e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    cosine: bool = True
    lr_floor: float = 0.0

    def validate(self) -> None:
        if not _is_number(self.lr) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"optim.lr must be finite and > 0, got {self.lr!r}")
        _non_negative("optim.weight_decay", self.weight_decay)
        _non_negative("optim.grad_clip", self.grad_clip)
        if not _is_number(self.lr_floor) or not 0 <= self.lr_floor <= 1:
            raise ConfigError(f"optim.lr_floor must be in [0, 1], got {self.lr_floor!r}")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; ``epochs`` and ``seed`` fix the data order and initialisation.

    ``select_epoch``: ``"last"`` keeps the last epoch's weights; ``"best_val"`` the epoch with
    the best validation metric (needs a validation split: model selection on validation only).
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    method: MethodConfig = dataclasses.field(default_factory=MethodConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    epochs: int = 10
    seed: int = 0
    select_epoch: str = "last"

    def validate(self) -> TrainConfig:
        for part in (self.model, self.method, self.data, self.optim):
            part.validate()
        if not _is_int(self.epochs) or self.epochs < 0:
            raise ConfigError(f"epochs must be an int >= 0, got {self.epochs!r}")
        if not _is_int(self.seed):
            raise ConfigError(f"seed must be an int, got {self.seed!r}")
        _choice("select_epoch", self.select_epoch, ("last", "best_val"))
        if self.select_epoch == "best_val" and not self.data.has_validation:
            raise ConfigError(
                "select_epoch='best_val' needs a validation split (data.val_speakers or "
                "data.val_takes)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, d, "").validate()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """From a ``.json`` or ``.toml`` file with the sections ``model``, ``method``, ... ."""
        return cls.from_dict(load_mapping(path))

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """A copy with ``section.field=value`` assignments applied (values parsed as JSON)."""
        d = self.to_dict()
        for item in assignments:
            apply_assignment(d, item)
        return TrainConfig.from_dict(d)


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML file into a dict."""
    path = Path(path)
    if path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            raise ConfigError("TOML configs need Python >= 3.11; use JSON")
        return tomllib.loads(path.read_text())
    if path.suffix == ".json":
        return json.loads(path.read_text())
    raise ConfigError(f"config file must end in .json or .toml, got {path}")


def parse_value(text: str) -> Any:
    """A flag value: JSON when it parses (numbers, lists, true/false/null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_assignment(d: dict[str, Any], item: str) -> None:
    """Apply ``"a.b=value"`` to the nested dict ``d`` in place; the key must exist."""
    if "=" not in item:
        raise ConfigError(f"override must look like section.field=value, got {item!r}")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = d
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise ConfigError(f"unknown config section {p!r} in {key!r}")
        node = node[p]
    if parts[-1] not in node:
        raise ConfigError(f"unknown config field {key!r}; known: {sorted(node)}")
    node[parts[-1]] = parse_value(value)


def _from_dict(cls, d: dict[str, Any], where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"config section {where or 'root'!r} must be a mapping, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ConfigError(f"unknown config fields {sorted(unknown)} in {where or 'root'!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        lists = [a for a in args if typing.get_origin(a) is list]
        if isinstance(value, list) and lists:
            return _coerce(value, lists[0], name)
        for a in args:
            if a in (int, float, str, bool):
                try:
                    return _coerce(value, a, name)
                except ConfigError:
                    continue
        raise ConfigError(f"{name} has the wrong type: {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (
        not isinstance(value, hint) or (hint is not bool and isinstance(value, bool))
    ):
        raise ConfigError(f"{name} must be {hint.__name__}, got {value!r}")
    return value


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of {options}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(name: str, value: int) -> None:
    if not _is_int(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not _is_number(value) or not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be finite and >= 0, got {value!r}")


def flat_config_fields(cls: type, config_path: str | None, overrides: list[str]) -> dict[str, Any]:
    """Fields of a flat config dataclass from an optional JSON file and ``field=value`` overrides.

    Values are parsed as JSON where they parse, else kept as strings; an unknown field or an
    override without ``=`` is an error, never ignored.
    """
    fields = json.loads(Path(config_path).read_text()) if config_path else {}
    names = {f.name for f in dataclasses.fields(cls)}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise ConfigError(
                f"override must be field=value with a {cls.__name__} field, got {item!r}"
            )
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    return fields
