"""Free Spoken Digit Dataset (FSDD): 3,000 isolated English digits, 8 kHz mono.

6 speakers x 10 digits x 50 takes, files ``<root>/fsdd/recordings/{digit}_{speaker}_{take}.wav``.
Licence CC BY-SA 4.0 (cite the data set: Jackson et al., Jakobovski/free-spoken-digit-dataset).

Two splits:

* :func:`split_by_take` — FSDD's usual one: takes 0-4 of every speaker and digit are the test set
  (300 files), the rest train. Every test speaker is also heard in training.
* :func:`split_by_speaker` — held-out speakers: harder, and the honest figure for a new voice.

Typical use::

    splits = load_fsdd(split="speaker")             # dict: "train", "test" (and "val")
    norm = FeatureNormalizer.fit(splits["train"].features)
    for ds in splits.values():
        ds.transform = norm
    loader = DataLoader(splits["train"], batch_size=32, shuffle=True,
                        collate_fn=functools.partial(collate_sequences, batch_first=True))
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import ConfigError
from ._dataset import FeatureSequenceDataset, Split, Transform
from ._files import download_file, replace_dir
from .errors import DataIntegrityError, DataNotFoundError, DownloadError
from .features import FeatureParams, file_features, make_cache
from .root import PathLike, data_root, missing_data_message

logger = logging.getLogger(__name__)

FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_URL = f"https://codeload.github.com/Jakobovski/free-spoken-digit-dataset/zip/{FSDD_COMMIT}"
# No SHA-256 of the archive is pinned: it could not be computed where this code was written, and
# an invented hash would be worse than none. The integrity check is instead the manifest below
# (exactly these 3,000 file names); pass ``expected_sha256=`` to download_fsdd to check the zip too.
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_DIGITS = tuple(range(10))
FSDD_TAKES = 50
FSDD_SAMPLE_RATE = 8000
DEFAULT_TEST_SPEAKERS = ("theo", "yweweler")  # fixed once; not chosen by looking at results
DEFAULT_TEST_TAKES = tuple(range(5))

_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


@dataclasses.dataclass(frozen=True)
class Recording:
    """One FSDD file: the spoken ``digit`` (0-9), ``speaker`` name, ``take`` index, ``path``."""

    digit: int
    speaker: str
    take: int
    path: Path


def expected_file_names() -> set[str]:
    """The pinned manifest: the 3,000 file names of FSDD at :data:`FSDD_COMMIT`."""
    return {
        f"{d}_{s}_{t}.wav" for d in FSDD_DIGITS for s in FSDD_SPEAKERS for t in range(FSDD_TAKES)
    }


def parse_recording_name(name: str) -> tuple[int, str, int]:
    """``"7_theo_12.wav"`` -> ``(7, "theo", 12)``.

    Raises:
        DataIntegrityError: the name does not follow ``{digit}_{speaker}_{take}.wav``.
    """
    m = _NAME.match(name)
    if m is None:
        raise DataIntegrityError(
            f"not an FSDD file name ({{digit}}_{{speaker}}_{{take}}.wav): {name}"
        )
    return int(m.group(1)), m.group(2), int(m.group(3))


def recordings_dir(root: PathLike | None = None) -> Path:
    """``<data root>/fsdd/recordings``."""
    return data_root(root) / "fsdd" / "recordings"


def _extract_recordings(archive: Path, out: Path) -> int:
    """Copy every ``.../recordings/*.wav`` member of the zip into ``out``; returns the count."""
    count = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = info.filename.rstrip("/").split("/")
                # Only the file name is used, so a crafted member path cannot escape ``out``.
                if len(parts) < 2 or parts[-2] != "recordings" or not parts[-1].endswith(".wav"):
                    continue
                with zf.open(info) as src, open(out / parts[-1], "wb") as dst:
                    shutil.copyfileobj(src, dst)
                count += 1
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive} is not a valid zip archive: {exc}") from exc
    return count


def verify_manifest(directory: Path) -> None:
    """Check that ``directory`` holds exactly the 3,000 FSDD file names.

    Raises:
        DataIntegrityError: a file is missing or an unexpected ``.wav`` is present.
    """
    present = {p.name for p in directory.glob("*.wav")}
    expected = expected_file_names()
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing or extra:
        raise DataIntegrityError(
            f"FSDD manifest mismatch in {directory}: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})"
        )


def download_fsdd(
    root: PathLike | None = None,
    *,
    url: str = FSDD_URL,
    expected_sha256: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Fetch FSDD at the pinned commit into ``<root>/fsdd/recordings`` unless already there.

    The zip is written atomically, checked against ``expected_sha256`` when given, unpacked into a
    temporary folder, checked against the 3,000-name manifest, and only then renamed into place.

    Args:
        root: data root (see :func:`~deltarnn.data.root.data_root`).
        url: archive URL; any URL urllib opens (tests use ``file://``).
        expected_sha256: hex digest of the archive, or ``None`` to rely on the manifest alone.
        force: replace an existing copy.
        timeout: socket timeout in seconds.

    Returns:
        The recordings folder.
    """
    dest = recordings_dir(root)
    if dest.is_dir() and not force:
        return dest
    base = dest.parent
    base.mkdir(parents=True, exist_ok=True)
    archive = download_file(url, base / f"fsdd-{FSDD_COMMIT}.zip", expected_sha256, timeout)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".recordings-", dir=base))
        try:
            count = _extract_recordings(archive, staging)
            logger.info("extracted %d FSDD recordings", count)
            verify_manifest(staging)
            if dest.exists():
                shutil.rmtree(dest)
            replace_dir(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        archive.unlink(missing_ok=True)
    return dest


def list_recordings(root: PathLike | None = None, *, download: bool = False) -> list[Recording]:
    """Every FSDD recording under the data root, sorted by (speaker, digit, take).

    Args:
        root: data root; the files are read from ``<root>/fsdd/recordings/*.wav``.
        download: fetch the data set (:func:`download_fsdd`) if the folder is missing.

    Raises:
        DataNotFoundError: the folder is missing and ``download`` is False.
        DataIntegrityError: the folder holds no FSDD recording.
    """
    directory = recordings_dir(root)
    if not directory.is_dir():
        if not download:
            raise DataNotFoundError(missing_data_message("FSDD", directory, can_download=True))
        download_fsdd(root)
    recordings = []
    for path in directory.glob("*.wav"):
        try:
            digit, speaker, take = parse_recording_name(path.name)
        except DataIntegrityError:
            logger.warning("skipping %s: not an FSDD file name", path)
            continue
        recordings.append(Recording(digit, speaker, take, path))
    if not recordings:
        raise DataIntegrityError(
            f"no FSDD recording ({{digit}}_{{speaker}}_{{take}}.wav) in {directory}"
        )
    recordings.sort(key=lambda r: (r.speaker, r.digit, r.take))
    return recordings


def split_by_speaker(
    recordings: Sequence[Recording],
    test_speakers: Iterable[str] = DEFAULT_TEST_SPEAKERS,
    val_speakers: Iterable[str] = (),
) -> Split:
    """Held-out speakers: everything of ``test_speakers`` is test, of ``val_speakers`` val.

    Raises:
        ConfigError: a speaker is in both sets, not in ``recordings``, or no speaker is left to
            train on.
    """
    test, val = set(test_speakers), set(val_speakers)
    present = {r.speaker for r in recordings}
    unknown = (test | val) - present
    if unknown:
        raise ConfigError(f"speakers {sorted(unknown)} not in recordings (have {sorted(present)})")
    if not present - test - val:
        raise ConfigError("test_speakers and val_speakers leave no speaker to train on")
    return _split(recordings, "speaker", test, val)


def split_by_take(
    recordings: Sequence[Recording],
    test_takes: Iterable[int] = DEFAULT_TEST_TAKES,
    val_takes: Iterable[int] = (),
) -> Split:
    """FSDD's usual split: takes ``test_takes`` (default 0-4) of every speaker and digit are test.

    Raises:
        ConfigError: ``test_takes`` and ``val_takes`` overlap.
    """
    return _split(recordings, "take", set(test_takes), set(val_takes))


def _split(recordings: Sequence[Recording], field: str, test: set, val: set) -> Split:
    """Recordings whose ``field`` (``"speaker"`` or ``"take"``) is in ``test`` are test, in
    ``val`` val, the others train.

    Raises:
        ConfigError: ``test`` and ``val`` overlap.
    """
    if test & val:
        raise ConfigError(f"test_{field}s and val_{field}s overlap: {sorted(test & val)}")
    return Split(
        train=[r for r in recordings if getattr(r, field) not in test | val],
        val=[r for r in recordings if getattr(r, field) in val],
        test=[r for r in recordings if getattr(r, field) in test],
    )


class FSDDDataset(FeatureSequenceDataset[int]):
    """Isolated-digit classification: items ``(features (T, F) float32 tensor, digit int)``.

    Features of all recordings are computed (or read from the cache) at construction; T is about
    the duration in 10 ms steps (FSDD files last 0.14-2.3 s) and F is ``params.n_mels``.

    Args:
        recordings: the items, e.g. one list of a :class:`Split`.
        params: feature parameters (audio is resampled to ``params.sample_rate``).
        transform: applied to each (T, F) array before it becomes a tensor (e.g. a normalizer).
        use_cache: read/write features through the on-disk cache.
        cache_dir: root of the derived-file cache (default :func:`~deltarnn.data.root.cache_dir`).
    """

    num_classes = 10

    def __init__(
        self,
        recordings: Sequence[Recording],
        params: FeatureParams | None = None,
        transform: Transform | None = None,
        use_cache: bool = True,
        cache_dir: PathLike | None = None,
    ) -> None:
        self.recordings = list(recordings)
        self.params = params or FeatureParams()
        cache = make_cache(use_cache, cache_dir)
        features = file_features([r.path for r in self.recordings], self.params, cache)
        super().__init__(features, [r.digit for r in self.recordings], transform)


def split_recordings(
    root: PathLike | None = None, split: str = "take", *, download: bool = False, **split_kwargs
) -> Split:
    """The recordings under ``root`` split by ``split``: ``"take"`` (:func:`split_by_take`) or
    ``"speaker"`` (:func:`split_by_speaker`), which gets ``split_kwargs``.

    Raises:
        ConfigError: ``split`` is neither.
    """
    splitters = {"take": split_by_take, "speaker": split_by_speaker}
    if split not in splitters:
        raise ConfigError(f"split must be one of {sorted(splitters)}, got {split!r}")
    return splitters[split](list_recordings(root, download=download), **split_kwargs)


def load_fsdd(
    root: PathLike | None = None,
    *,
    split: str = "take",
    params: FeatureParams | None = None,
    download: bool = False,
    use_cache: bool = True,
    cache_dir: PathLike | None = None,
    **split_kwargs,
) -> dict[str, FSDDDataset]:
    """FSDD datasets per split: ``{"train", "test"}`` plus ``"val"`` when the split has one.

    Args:
        split: ``"take"`` (:func:`split_by_take`) or ``"speaker"`` (:func:`split_by_speaker`);
            ``split_kwargs`` go to that function (e.g. ``val_speakers=("nicolas",)``).
        root, download: see :func:`list_recordings`.
        params, use_cache, cache_dir: see :class:`FSDDDataset`.
    """
    parts = split_recordings(root, split, download=download, **split_kwargs)
    return {
        name: FSDDDataset(recs, params, use_cache=use_cache, cache_dir=cache_dir)
        for name, recs in parts.as_dict().items()
    }
