"""A labelled set of real animal sounds for ``make bench-agile``, from a package's own
sample data: pykanto 0.1.8's wheel (a library for animal vocalisation data) ships
recordings of three species with their labels: 20 segmented great tit songs of two birds
(B32, SW83; a JSON each naming species and bird), two Bengalese finch recordings
(bird 3: ``348.wav``, ``363.wav``) and two European storm petrel recordings from
xeno-canto (XC46092, XC663885), each with its Sonic Visualiser boxes.

The wheel is fetched once by pip from the package registry (``pip download --no-deps``:
nothing is installed), checked against its SHA-256, and its ``data/`` unpacked into a cache
outside the checkout (``~/.cache/sevensense/bench-data``; ``SEVENSENSE_BENCH_DATA`` moves
it). Nothing of it is committed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE, VERSION = "pykanto", "0.1.8"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "44b0df060e83087950fd5b6780bbc3bc13f3122abdadb1cb7f979e641adc3077"
CACHE = Path(
    os.environ.get("SEVENSENSE_BENCH_DATA", Path.home() / ".cache" / "sevensense" / "bench-data")
)
DATA = "pykanto/data/"

_RAW = "raw"
_TITS = "segmented/great_tit/WAV"


def pykanto_data() -> Path:
    """The unpacked ``pykanto/data`` directory, fetched and checked on first use."""
    root = CACHE / f"{PACKAGE}-{VERSION}"
    done = root / ".unpacked"
    if done.exists():
        return root / DATA
    root.mkdir(parents=True, exist_ok=True)
    wheel = root / WHEEL
    if not wheel.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
                str(root),
                f"{PACKAGE}=={VERSION}",
            ],
            check=True,
        )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        wheel.unlink()
        raise RuntimeError(f"{WHEEL}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root, [n for n in z.namelist() if n.startswith(DATA)])
    done.write_text(WHEEL_SHA256)
    return root / DATA


def pykanto_split() -> dict[str, tuple[list[Path], list[Path]]]:
    """Per class, the recordings to draw training windows from and those held out: the
    finch's and the petrel's two recordings one each way; each great tit's songs
    alternately. The two great tits are two classes (which bird sings, as the songs' JSON
    says): telling individuals of one species apart is the hard part of this set."""
    data = pykanto_data()
    split: dict[str, tuple[list[Path], list[Path]]] = {}
    for bird in ("B32", "SW83"):
        songs = sorted((data / _TITS).glob(f"2021-{bird}-*.wav"))
        split[f"great_tit_{bird.lower()}"] = (songs[0::2], songs[1::2])
    return {
        **split,
        "bengalese_finch": (
            [data / _RAW / "BENGALESE_FINCH/bird_3/348.wav"],
            [data / _RAW / "BENGALESE_FINCH/bird_3/363.wav"],
        ),
        "storm_petrel": (
            [data / _RAW / "STORM-PETREL/XC46092.wav"],
            [data / _RAW / "STORM-PETREL/XC663885.wav"],
        ),
    }
