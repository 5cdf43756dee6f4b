"""``deltarnn data fetch asterisk``: the apt-get/dpkg step, with stand-in tools."""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import textwrap

import numpy as np
import pytest
import soundfile as sf

from deltarnn.cli.data import fetch_asterisk
from deltarnn.cli.main import main
from deltarnn.data import DataNotFoundError, DownloadError, list_utterances
from deltarnn.data import asterisk as ast


def _script(path, body):
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _fake_tools(tmp_path, fail_download=False):
    """Stand-ins for apt-get and dpkg: 'packages' are tarballs of a two-prompt tree."""
    src = tmp_path / "pkgsrc"
    voice = src / ast.VOICE_DIR
    voice.mkdir(parents=True)
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)).astype(np.float32)
    for name in ("hello", "press-one"):
        sf.write(voice / f"{name}.wav", tone, 8000)
    doc = src / ast.TRANSCRIPT_FILE
    doc.parent.mkdir(parents=True)
    with gzip.open(doc, "wt") as f:
        f.write("hello: Hello!\npress-one: Press 1.\n")
    payload = tmp_path / "payload.tar"
    with tarfile.open(payload, "w") as tar:
        tar.add(src / "usr", arcname="usr")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(
        bin_dir / "apt-get",
        f"""\
        [ "$1" = download ] || exit 2
        {"echo 'E: Unable to locate package' >&2; exit 100" if fail_download else ""}
        shift
        for p in "$@"; do cp {payload} "${{p}}_1.6.1-1_all.deb"; done
        """,
    )
    _script(bin_dir / "dpkg", '[ "$1" = -x ] || exit 2\ntar -xf "$2" -C "$3"\n')
    return bin_dir


def test_fetch_runs_apt_get_download_and_dpkg(tmp_path, monkeypatch):
    bin_dir = _fake_tools(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "root"
    with pytest.raises(DataNotFoundError, match="deltarnn data fetch asterisk"):
        list_utterances(root)  # the reader never fetches
    assert main(["data", "fetch", "asterisk", "--root", str(root)]) == 0
    assert (root / "asterisk" / ast.TRANSCRIPT_FILE).is_file()
    assert [u.name for u in list_utterances(root)] == ["hello", "press-one"]
    assert [p.name for p in root.iterdir()] == ["asterisk"]  # no staging folder left
    assert fetch_asterisk(root, apt_get="no-such-apt-get") == root / "asterisk"  # already there


def test_fetch_reports_failures(tmp_path, monkeypatch):
    bin_dir = _fake_tools(tmp_path, fail_download=True)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(DownloadError, match="apt-get update"):
        fetch_asterisk(tmp_path / "root")
    with pytest.raises(DownloadError, match="not found"):
        fetch_asterisk(tmp_path / "root", apt_get="no-such-apt-get")
