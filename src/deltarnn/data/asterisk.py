"""Continuous English speech: the Asterisk core prompts (voice "Allison"), with transcripts.

The data come from two Debian packages, ``asterisk-core-sounds-en-wav`` (8 kHz 16-bit mono WAV
files under ``usr/share/asterisk/sounds/en_US_f_Allison/``) and ``asterisk-core-sounds-en``
(transcripts in ``usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz``, one
``name: text`` line per prompt, where ``name`` is the WAV path without ``.wav``).
This module only reads them from ``<root>/asterisk/``; ``deltarnn data fetch asterisk`` unpacks
both packages there with ``apt-get download`` and ``dpkg -x`` (no root rights needed).

Transcripts are normalised for character-level CTC (:func:`normalize_text`): annotations in
``[...]``, ``<...>`` and ``(...)`` are removed (tones, beeps, "(5 seconds of silence)"), ``*`` and
``#`` become "star" and "pound" (what the keypad prompts say), numbers are spelled out, case is
folded, every other punctuation mark becomes a space. Prompts whose transcript is empty after
this (pure tones and silences) are left out.

Alphabet (:data:`ALPHABET`): index 0 is the CTC blank, 1 is space, 2-27 are "a"-"z", 28 is the
apostrophe; :data:`NUM_CLASSES` = 29.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ConfigError
from ._dataset import FeatureSequenceDataset, Split, Transform
from .errors import DataIntegrityError, DataNotFoundError
from .features import FeatureParams, file_features, make_cache
from .root import PathLike, data_root

logger = logging.getLogger(__name__)

ASTERISK_PACKAGES = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en")
VOICE_DIR = "usr/share/asterisk/sounds/en_US_f_Allison"
TRANSCRIPT_FILE = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"

BLANK = 0
ALPHABET = ("", " ", *"abcdefghijklmnopqrstuvwxyz", "'")
NUM_CLASSES = len(ALPHABET)
_INDEX = {c: i for i, c in enumerate(ALPHABET) if c}

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ANNOTATION = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _cardinal(n: int) -> str:
    """0 <= n <= 999 in words, American style without "and"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    rest = n % 100
    return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + _cardinal(rest))


def number_to_words(token: str) -> str:
    """Spell a digit string as the prompts read it.

    Up to three digits (no leading zero) read as a cardinal ("500" -> "five hundred"); longer
    numbers, which in these prompts are extensions and passwords, read digit by digit ("1234" ->
    "one two three four"); a decimal part reads "point" then digits ("28.8"). This is a
    convention, not a check against the audio.
    """
    whole, _, frac = token.partition(".")
    if len(whole) <= 3 and (whole == "0" or not whole.startswith("0")):
        words = _cardinal(int(whole))
    else:
        words = " ".join(_ONES[int(d)] for d in whole)
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return words


def normalize_text(raw: str) -> str:
    """Transcript -> lower-case words over the :data:`ALPHABET` (see the module docstring)."""
    text = _ANNOTATION.sub(" ", raw)
    text = text.replace("*", " star ").replace("#", " pound ")
    text = _NUMBER.sub(lambda m: " " + number_to_words(m.group(0)) + " ", text)
    text = text.lower()
    text = re.sub(r"[^a-z' ]", " ", text)
    # Keep apostrophes only inside words ("don't"), not as quotation marks.
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return " ".join(text.split())


def text_to_labels(text: str) -> list[int]:
    """Normalised text -> class indices 1..28.

    Raises:
        ConfigError: a character is outside the alphabet (normalise with :func:`normalize_text`).
    """
    try:
        return [_INDEX[c] for c in text]
    except KeyError as exc:
        raise ConfigError(
            f"text has character {exc.args[0]!r} outside the alphabet (space, a-z, apostrophe)"
        ) from None


def labels_to_text(labels: Sequence[int] | torch.Tensor) -> str:
    """Class indices -> text; blanks (0) are dropped (no repeat merging here)."""
    values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    for v in values:
        if not 0 <= int(v) < NUM_CLASSES:
            raise ConfigError(f"labels must be in 0..{NUM_CLASSES - 1}, got {v!r}")
    return "".join(ALPHABET[int(v)] for v in values)


def parse_transcripts(path: PathLike) -> dict[str, str]:
    """Read ``name: text`` lines (gzip or plain), skipping blank lines and ``;`` comments.

    Returns:
        ``{name: raw text}`` in file order.

    Raises:
        DataIntegrityError: a line has no ``:`` or an empty name.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            name, sep, text = line.partition(":")
            if not sep or not name.strip():
                raise DataIntegrityError(f"{path}:{lineno}: expected 'name: text', got {line!r}")
            if name.strip() in out:
                logger.warning("%s:%d: duplicate prompt %r, keeping the last", path, lineno, name)
            out[name.strip()] = text.strip()
    return out


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One prompt: ``name`` (e.g. ``"vm-login"``), normalised ``text``, ``raw_text``, WAV
    ``path`` and ``duration_s``."""

    name: str
    text: str
    raw_text: str
    path: Path
    duration_s: float

    @property
    def labels(self) -> list[int]:
        return text_to_labels(self.text)


def asterisk_dir(root: PathLike | None = None) -> Path:
    """``<data root>/asterisk`` (the packages' ``usr/`` tree is unpacked inside)."""
    return data_root(root) / "asterisk"


def holds_prompts(directory: Path) -> bool:
    """Whether ``directory`` holds the unpacked packages (transcripts and the voice's WAVs)."""
    return (directory / TRANSCRIPT_FILE).is_file() and (directory / VOICE_DIR).is_dir()


def require_asterisk(root: PathLike | None = None) -> Path:
    """The ``<root>/asterisk`` folder, if it holds the prompts.

    Raises:
        DataNotFoundError: the prompts are not there; the message says how to fetch them
            (``deltarnn data fetch asterisk``, which needs ``apt-get`` and ``dpkg``).
    """
    dest = asterisk_dir(root)
    if not holds_prompts(dest):
        raise DataNotFoundError(
            f"Asterisk prompts not found at {dest / TRANSCRIPT_FILE}: set DELTARNN_DATA to the "
            "folder that holds asterisk/, or pass root=, or fetch them with "
            "`deltarnn data fetch asterisk`."
        )
    return dest


def list_utterances(root: PathLike | None = None) -> list[Utterance]:
    """Prompts with both a WAV file and a non-empty normalised transcript, sorted by name.

    Raises:
        DataNotFoundError: see :func:`require_asterisk`.
    """
    import soundfile as sf

    base = require_asterisk(root)
    voice = base / VOICE_DIR
    utterances = []
    for name, raw in parse_transcripts(base / TRANSCRIPT_FILE).items():
        path = voice / f"{name}.wav"
        text = normalize_text(raw)
        if not text or not path.is_file():
            continue
        utterances.append(Utterance(name, text, raw, path, float(sf.info(str(path)).duration)))
    utterances.sort(key=lambda u: u.name)
    return utterances


def _bucket(name: str, salt: str) -> float:
    """A stable number in [0, 1) from the name, independent of every other utterance."""
    digest = hashlib.sha256(f"{salt}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_utterances(
    utterances: Sequence[Utterance],
    test_fraction: float = 0.1,
    val_fraction: float = 0.0,
    salt: str = "deltarnn",
) -> Split:
    """Held-out prompts by a hash of the name: deterministic, and an utterance keeps its split
    when others are added or removed. Fractions are expected values, not exact counts.

    Raises:
        ConfigError: fractions outside [0, 1) or summing to 1 or more.
    """
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ConfigError(
            "need 0 <= test_fraction, val_fraction and test_fraction + val_fraction < 1, got "
            f"{test_fraction}, {val_fraction}"
        )
    parts: dict[str, list[Utterance]] = {"train": [], "val": [], "test": []}
    for u in utterances:
        b = _bucket(u.name, salt)
        key = (
            "test" if b < test_fraction else "val" if b < test_fraction + val_fraction else "train"
        )
        parts[key].append(u)
    return Split(**parts)


class AsteriskDataset(FeatureSequenceDataset[torch.Tensor]):
    """Character-level CTC items ``(features (T, F) float32, labels (L,) int64 in 1..28)``.

    Args:
        utterances: the items (one list of :func:`split_utterances`).
        params, transform, use_cache, cache_dir: see :class:`~deltarnn.data.fsdd.FSDDDataset`;
            audio is resampled to ``params.sample_rate`` (the prompts are 8 kHz).
    """

    num_classes = NUM_CLASSES
    blank = BLANK

    def __init__(
        self,
        utterances: Sequence[Utterance],
        params: FeatureParams | None = None,
        transform: Transform | None = None,
        use_cache: bool = True,
        cache_dir: PathLike | None = None,
    ) -> None:
        self.utterances = list(utterances)
        self.params = params or FeatureParams()
        cache = make_cache(use_cache, cache_dir)
        features = file_features([u.path for u in self.utterances], self.params, cache)
        targets = [torch.tensor(u.labels, dtype=torch.int64) for u in self.utterances]
        super().__init__(features, targets, transform)


def load_asterisk(
    root: PathLike | None = None,
    *,
    test_fraction: float = 0.1,
    val_fraction: float = 0.0,
    max_seconds: float | None = None,
    params: FeatureParams | None = None,
    use_cache: bool = True,
    cache_dir: PathLike | None = None,
) -> dict[str, AsteriskDataset]:
    """Asterisk datasets per split: ``{"train", "test"}`` plus ``"val"`` when ``val_fraction``.

    Args:
        max_seconds: drop prompts longer than this (most last a few seconds; the longest, over a
            minute).
        root: see :func:`require_asterisk`.
        test_fraction, val_fraction: see :func:`split_utterances`.
        params, use_cache, cache_dir: see :class:`AsteriskDataset`.
    """
    utterances = list_utterances(root)
    if max_seconds is not None:
        utterances = [u for u in utterances if u.duration_s <= max_seconds]
    parts = split_utterances(utterances, test_fraction, val_fraction)
    return {
        name: AsteriskDataset(items, params, use_cache=use_cache, cache_dir=cache_dir)
        for name, items in parts.as_dict().items()
    }
