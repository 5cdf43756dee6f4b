"""FSDD: listing, splits, download (from a local zip), dataset items, cache, normalizer."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest
import soundfile as sf

from deltarnn.data import fsdd
from deltarnn.data.errors import DataIntegrityError, DataNotFoundError, DownloadError
from deltarnn.data.features import FeatureNormalizer
from deltarnn.errors import ConfigError

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def recordings(data_root):
    return fsdd.list_recordings(data_root)


# --- real data (skipped without the mirror) --------------------------------------------------


def test_real_counts(recordings):
    assert len(recordings) == 3000
    assert {r.speaker for r in recordings} == set(fsdd.FSDD_SPEAKERS)
    for speaker in fsdd.FSDD_SPEAKERS:
        assert sum(r.speaker == speaker for r in recordings) == 500
    assert sorted({r.digit for r in recordings}) == list(range(10))
    assert {r.take for r in recordings} == set(range(50))
    fsdd.verify_manifest(recordings[0].path.parent)


def _ids(items):
    return {r.path for r in items}


def test_real_split_by_take(recordings):
    split = fsdd.split_by_take(recordings)
    assert len(split.test) == 300 and len(split.train) == 2700 and split.val == []
    assert not _ids(split.train) & _ids(split.test)
    assert all(r.take < 5 for r in split.test) and all(r.take >= 5 for r in split.train)
    with_val = fsdd.split_by_take(recordings, val_takes=(5, 6))
    assert len(with_val.val) == 120 and len(with_val.train) == 2580


def test_real_split_by_speaker_holds_speakers_out(recordings):
    split = fsdd.split_by_speaker(recordings)
    test_speakers = {r.speaker for r in split.test}
    assert test_speakers == set(fsdd.DEFAULT_TEST_SPEAKERS)
    assert not test_speakers & {r.speaker for r in split.train}
    assert len(split.test) == 1000 and len(split.train) == 2000
    split = fsdd.split_by_speaker(recordings, test_speakers=("george",), val_speakers=("theo",))
    speakers = [{r.speaker for r in part} for part in (split.train, split.val, split.test)]
    assert speakers[1] == {"theo"} and speakers[2] == {"george"}
    assert not speakers[0] & (speakers[1] | speakers[2])
    assert not _ids(split.train) & _ids(split.val)


def test_real_dataset_items_cache_and_normalizer(recordings, tmp_path):
    split = fsdd.split_by_speaker(recordings)
    train = [r for r in split.train if r.take < 3]  # 90 files keep the test fast
    test = [r for r in split.test if r.take < 2]
    ds = fsdd.FSDDDataset(train, cache_dir=tmp_path / "c")
    x, y = ds[0]
    assert x.dtype.is_floating_point and x.shape[1] == 40 and x.dim() == 2
    assert y == train[0].digit and isinstance(y, int)
    # About one frame per 10 ms: T = 1 + N // hop.
    n = sf.info(str(train[0].path)).frames
    assert x.shape[0] == 1 + n // 80
    again = fsdd.FSDDDataset(train, cache_dir=tmp_path / "c")
    for a, b in zip(ds.features, again.features, strict=True):
        np.testing.assert_array_equal(a, b)
    cached = list((tmp_path / "c" / "features").glob("*.safetensors"))
    assert len(cached) == len(train)

    norm = FeatureNormalizer.fit(ds.features)
    frames = np.concatenate(ds.features)
    np.testing.assert_allclose(norm.mean, frames.mean(axis=0), rtol=1e-5, atol=1e-5)
    ds.transform = norm
    normed = np.concatenate([ds[i][0].numpy() for i in range(len(ds))])
    np.testing.assert_allclose(normed.mean(axis=0), 0.0, atol=1e-4)
    # Fitted on train only: held-out speakers are not centred exactly.
    held_out = fsdd.FSDDDataset(test, transform=norm, cache_dir=tmp_path / "c")
    test_frames = np.concatenate([held_out[i][0].numpy() for i in range(len(held_out))])
    assert np.abs(test_frames.mean(axis=0)).max() > 1e-2


# --- no mirror needed -------------------------------------------------------------------------


def test_parse_recording_name():
    assert fsdd.parse_recording_name("7_theo_12.wav") == (7, "theo", 12)
    for bad in ("x_theo_1.wav", "7_theo.wav", "7_theo_1.mp3", "17_theo_1.wav"):
        with pytest.raises(DataIntegrityError):
            fsdd.parse_recording_name(bad)


def test_missing_root_says_how_to_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match="DELTARNN_DATA.*download=True") as info:
        fsdd.list_recordings(tmp_path)
    assert isinstance(info.value, FileNotFoundError)


def test_empty_folder_is_an_integrity_error(tmp_path):
    (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    (tmp_path / "fsdd" / "recordings" / "notes.wav").write_bytes(b"")
    with pytest.raises(DataIntegrityError, match="no FSDD recording"):
        fsdd.list_recordings(tmp_path)


def test_split_arguments_are_checked():
    recs = [fsdd.Recording(0, s, 0, fsdd.Path(f"0_{s}_0.wav")) for s in ("a", "b", "c")]
    with pytest.raises(ConfigError, match="overlap"):
        fsdd.split_by_speaker(recs, test_speakers=("a",), val_speakers=("a",))
    with pytest.raises(ConfigError, match="not in recordings"):
        fsdd.split_by_speaker(recs, test_speakers=("zed",))
    with pytest.raises(ConfigError, match="no speaker to train"):
        fsdd.split_by_speaker(recs, test_speakers=("a", "b"), val_speakers=("c",))
    with pytest.raises(ConfigError, match="overlap"):
        fsdd.split_by_take(recs, test_takes=(0, 1), val_takes=(1,))
    with pytest.raises(ConfigError, match="split"):
        fsdd.load_fsdd(split="random")


def _wav_bytes() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.linspace(-0.1, 0.1, 400, dtype=np.float32), 8000, format="WAV")
    return buf.getvalue()


def _fake_archive(path, names):
    """A zip laid out like GitHub's: <repo>-<commit>/recordings/*.wav plus other files."""
    top = f"free-spoken-digit-dataset-{fsdd.FSDD_COMMIT}"
    wav = _wav_bytes()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/README.md", "FSDD")
        zf.writestr(f"{top}/utils/fake.wav", wav)  # not under recordings/: must be ignored
        for name in names:
            zf.writestr(f"{top}/recordings/{name}", wav)
    return path


def test_download_from_archive_verifies_and_installs(tmp_path, monkeypatch):
    archive = _fake_archive(tmp_path / "src.zip", sorted(fsdd.expected_file_names()))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    calls = []
    real = fsdd.download_fsdd

    def fetch_local(root=None, **kwargs):
        calls.append(root)
        return real(root, url=archive.as_uri(), expected_sha256=digest)

    monkeypatch.setattr(fsdd, "download_fsdd", fetch_local)
    root = tmp_path / "root"
    with pytest.raises(DataNotFoundError):
        fsdd.list_recordings(root)  # never fetches unless asked
    assert calls == []
    assert len(fsdd.list_recordings(root, download=True)) == 3000
    assert calls == [root]
    dest = root / "fsdd" / "recordings"
    assert len(list(dest.glob("*.wav"))) == 3000
    assert [p.name for p in (root / "fsdd").iterdir()] == ["recordings"]  # zip and staging gone
    # Present already: nothing is fetched (a bad URL would fail otherwise).
    assert real(root, url=(tmp_path / "nope.zip").as_uri()) == dest


def test_download_rejects_wrong_checksum_and_incomplete_archive(tmp_path):
    names = sorted(fsdd.expected_file_names())
    full = _fake_archive(tmp_path / "full.zip", names)
    root = tmp_path / "root"
    with pytest.raises(DataIntegrityError, match="expected_sha256"):
        fsdd.download_fsdd(root, url=full.as_uri(), expected_sha256="0" * 64)
    assert not (root / "fsdd" / "recordings").exists()
    short = _fake_archive(tmp_path / "short.zip", [*names[:10], "0_zed_0.wav"])
    with pytest.raises(DataIntegrityError, match="2990 missing.*1 unexpected"):
        fsdd.download_fsdd(root, url=short.as_uri())
    assert not (root / "fsdd" / "recordings").exists()
    assert [p.name for p in (root / "fsdd").iterdir()] == []  # no staging folder left behind
    with pytest.raises(DownloadError):
        fsdd.download_fsdd(root, url=(tmp_path / "absent.zip").as_uri())
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="not a valid zip"):
        fsdd.download_fsdd(root, url=(tmp_path / "bad.zip").as_uri())
