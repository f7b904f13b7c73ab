"""perch-hoplite's own code reads our labels and our classifier, and its own trainer agrees
with ours. hoplite's ``agile.classifier`` imports TensorFlow, so this peer gets a virtualenv
of its own (``~/.cache/sevensense/peer-venvs/hoplite-agile``, made once by the fixture, pinned,
about 1.6 GB), outside the checkout and apart from the index test's slim one."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

from bench import peers
from sevensense.agile.metrics import roc_auc
from sevensense.agile.store import ClassifierStore
from sevensense.agile.train import TrainOptions
from sevensense.agile.workflow import train_classifier
from sevensense.index.annotations import AnnotationIn, annotation_store
from sevensense.index.hoplite import HopliteIndex
from sevensense.index.records import Scope
from sevensense.settings import IndexSettings
from tests.agile.conftest import KEY, filled
from tests.index.conftest import RealWindows
from tests.index.test_hoplite_compat import HOPLITE, HOPLITE_REQUIREMENTS

TF_REQUIREMENTS = (
    "tensorflow-cpu==2.21.0",
    "astunparse==1.6.3",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "flatbuffers==25.12.19",
    "gast==0.7.0",
    "google-pasta==0.2.0",
    "grpcio==1.85.4",
    "h5py==3.14.0",
    "idna==3.21",
    "keras==3.15.1",
    "libclang==18.1.1",
    "markdown-it-py==4.3.0",
    "mdurl==0.1.2",
    "ml_dtypes==0.7.0",
    "namex==0.1.0",
    "numkong==7.8.6",
    "opt_einsum==3.4.0",
    "optree==0.20.0",
    "packaging==26.4",
    "protobuf==7.36.2",
    "Pygments==2.21.0",
    "requests==2.34.2",
    "rich==15.0.0",
    "six==1.17.0",
    "termcolor==3.3.0",
    "urllib3==2.8.0",
    "wrapt==2.5.2",
)
# Outside the checkout, as BirdNET-Analyzer's (tests/peers/birdnet_analyzer_env.py): a
# fresh clone on the same machine reuses it (about 4 min and 1.6 GB to make); the stamp
# rebuilds it whenever the pins change.
VENV = peers.PEER_VENVS / "hoplite-agile"
RUNNER = Path(__file__).parents[1] / "peers" / "hoplite_agile.py"
CLASSES = {"soundscape_birdnet_120s_48k": "chorus", "perch_clap_21s_16k": "clap"}


@pytest.fixture(scope="session")
def hoplite_tf_python() -> Path:
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirement"
    want = "\n".join((HOPLITE, *HOPLITE_REQUIREMENTS, *TF_REQUIREMENTS))
    if not (python.exists() and stamp.exists() and stamp.read_text() == want):
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", HOPLITE], check=True, timeout=900)
        subprocess.run([*pip, *HOPLITE_REQUIREMENTS, *TF_REQUIREMENTS], check=True, timeout=1800)
        stamp.write_text(want)
    return python


def test_hoplite_reads_our_labels_and_classifier(
    hoplite_tf_python: Path, real_windows: RealWindows, tmp_path: Path
) -> None:
    index = HopliteIndex(tmp_path, "interop", IndexSettings())
    info = filled(index, real_windows)
    store = annotation_store(index)
    everyone = Scope.everyone()
    windows = store.windows(KEY, everyone)
    source = {w.window_id: w.source for w in windows}
    # three labelled windows per class (positives), one explicit negative; the rest unlabelled
    items: list[AnnotationIn] = []
    for stem, label in CLASSES.items():
        ids = [w for w, s in source.items() if s == stem][:3]
        items += [AnnotationIn(window_id=i, label=label, provenance="interop") for i in ids]
    other = next(w for w, s in source.items() if s == "perch_testclip_10s_16k")
    items.append(AnnotationIn(window_id=other, label="clap", type="negative", provenance="interop"))
    store.annotate(KEY, items, everyone)
    clf = train_classifier(
        index, info, everyone, ClassifierStore(tmp_path / "models"), "interop", None, TrainOptions()
    )
    ids = np.asarray(sorted(source), dtype=np.int64)
    np.save(tmp_path / "ids.npy", ids)
    index.compact()  # hoplite reads usearch.index only, not our append log
    index.close()

    out = tmp_path / "hoplite.json"
    subprocess.run(
        [
            str(hoplite_tf_python),
            str(RUNNER),
            str(tmp_path / "interop" / KEY.slug),
            str(clf.directory / "classifier.json"),
            str(tmp_path / "ids.npy"),
            "128",
            str(out),
        ],
        check=True,
        timeout=600,
    )
    theirs = json.loads(out.read_text())
    labelled = sorted(
        [a.recording_id, a.start_s, a.label, {"negative": 0, "positive": 1}[a.type], a.provenance]
        for a in store.annotations(KEY, everyone)
    )
    assert theirs["annotations"] == labelled
    assert theirs["classes"] == theirs["their_classes"] == ["chorus", "clap"]
    assert theirs["model_key"] == "sevensense:birdnet-v2.4"
    # hoplite scores our classifier on embeddings it read itself: the same logits
    vectors = store.vectors(KEY, ids)
    assert np.allclose(np.asarray(theirs["ours"]), clf.head(vectors), atol=1e-5)
    # both trainers on the same labels: ROC-AUC on the unlabelled windows (truth: recording)
    unlabelled = np.isin(ids, [i.window_id for i in items], invert=True)
    for column, (stem, _) in enumerate(CLASSES.items()):
        truth = np.asarray([source[int(i)] == stem for i in ids])[unlabelled]
        ours = roc_auc(clf.head(vectors)[unlabelled, column], truth)
        hers = roc_auc(np.asarray(theirs["theirs"])[unlabelled, column], truth)
        assert ours is not None and hers is not None
        print(f"{stem}: ROC-AUC ours {ours:.4f}, perch-hoplite's {hers:.4f}")
        assert abs(ours - hers) <= 0.02, (stem, ours, hers)
        assert ours >= 0.9
