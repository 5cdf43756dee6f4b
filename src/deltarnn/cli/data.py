"""``deltarnn data fetch NAME``: fetch a data set into the data root (the library never does).

* ``fsdd``: the Free Spoken Digit Dataset, downloaded and checked against its manifest.
* ``asterisk``: the Asterisk core prompts (voice "Allison"), from the Debian packages
  ``asterisk-core-sounds-en-wav`` and ``asterisk-core-sounds-en``: ``apt-get download`` in a
  temporary folder, ``dpkg -x`` into a staging folder renamed into place when complete (no root
  rights needed; the package lists must know the packages: ``apt-get update``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

HELP = "fetch a data set (fsdd, asterisk) into $DELTARNN_DATA (or --root)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download and unpack a data set")
    fetch.add_argument("name", choices=("fsdd", "asterisk"))
    fetch.add_argument("--root", help="data root (default: $DELTARNN_DATA)")


def _run(cmd: list[str], cwd: Path) -> None:
    from ..data import DownloadError

    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        hint = ""
        if "download" in cmd:
            hint = " (if the package is unknown, refresh the package lists: apt-get update)"
        raise DownloadError(
            f"{' '.join(cmd)} failed with exit code {proc.returncode}{hint}: "
            f"{proc.stderr.strip()[-800:]}"
        )


def fetch_asterisk(
    root: str | Path | None = None,
    *,
    packages: Sequence[str] | None = None,
    apt_get: str = "apt-get",
    dpkg: str = "dpkg",
) -> Path:
    """Unpack the prompts into ``<root>/asterisk`` (nothing to do when they are there).

    Raises:
        DownloadError: a tool is missing or failed, or the packages lack the expected files.
    """
    from ..data import DownloadError
    from ..data import asterisk as ast
    from ..data._files import replace_dir

    packages = ast.ASTERISK_PACKAGES if packages is None else tuple(packages)
    dest = ast.asterisk_dir(root)
    if ast.holds_prompts(dest):
        return dest
    for tool in (apt_get, dpkg):
        if shutil.which(tool) is None:
            raise DownloadError(
                f"{tool!r} not found: fetching the Asterisk prompts needs apt-get and dpkg"
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        debs_dir = Path(tmp)
        _run([apt_get, "download", *packages], cwd=debs_dir)
        staging = Path(tempfile.mkdtemp(prefix=".asterisk-", dir=dest.parent))
        try:
            for package in packages:
                debs = sorted(debs_dir.glob(f"{package}_*.deb"))
                if not debs:
                    raise DownloadError(f"apt-get download left no .deb for {package!r}")
                _run([dpkg, "-x", str(debs[-1]), str(staging)], cwd=debs_dir)
            if not ast.holds_prompts(staging):
                raise DownloadError(
                    f"packages {list(packages)} lack {ast.TRANSCRIPT_FILE} or {ast.VOICE_DIR}"
                )
            if dest.exists():
                shutil.rmtree(dest)
            replace_dir(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("Asterisk prompts unpacked into %s", dest)
    return dest


def run(args: argparse.Namespace) -> int:
    if args.name == "asterisk":
        dest = fetch_asterisk(args.root)
    else:
        from ..data import download_fsdd

        dest = download_fsdd(args.root)
    print(dest)
    return 0
