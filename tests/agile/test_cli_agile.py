"""Labels and classifiers from the command line (in process, click's runner), on the
embedded backend: recordings embedded into an index, labels imported from a CSV and a Raven
selection table, a classifier trained, listed and reviewed; a label set that cannot train
exits 2 with its code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from sevensense.agile.store import ClassifierStore
from sevensense.cli import main
from tests.conftest import MODELS, audio

CLAP = audio("perch_clap_21s_16k.wav")
SOUNDSCAPE = audio("soundscape_birdnet_120s_48k.flac")
RAVEN = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
    "Species\n"
)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SEVENSENSE_INDEX__DIR", str(tmp_path / "index"))
    monkeypatch.setenv("SEVENSENSE_INFERENCE__PROVIDERS", '["cpu"]')
    models = tmp_path / "models"  # the built models, and a classifier registry of its own
    models.mkdir()
    for entry in MODELS.iterdir():
        (models / entry.name).symlink_to(entry.resolve())

    def run(*args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(main, ["--models-dir", str(models), *args])
        assert result.exit_code == code, result.output + repr(result.exception)
        return result

    return run


def test_label_import_train_review(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for path in (CLAP, SOUNDSCAPE):
        out = tmp_path / f"{path.stem}.parquet"
        cli(
            "embed",
            str(path),
            "--out",
            str(out),
            "--overlap",
            "0",
            "--energy-threshold",
            "0",
            "--index",
            "field",
            "--quiet",
        )
    table = tmp_path / "claps.csv"
    rows = [f"{CLAP},{s},{s + 3},clap," for s in (0, 3, 6, 9)]
    table.write_text(
        "file,start,end,label,type\n" + "\n".join(rows) + f"\n{CLAP},12,15,clap,negative\n"
    )
    r = cli("label", "import", str(table), "--index", "field")
    assert r.output.count("positive") == 0  # a summary, not the rows
    assert json.loads(r.output)["added"] == 5
    r = cli("label", "import", str(table), "--index", "field")
    assert json.loads(r.output)["unchanged"] == 5
    raven = tmp_path / "chorus.selections.txt"
    lines = [
        f"{i}\tSpectrogram 1\t1\t{s}\t{s + 2.5}\t500\t8000\tchorus"
        for i, s in enumerate((0, 30, 60, 90), 1)
    ]
    raven.write_text(RAVEN + "\n".join(lines) + "\n")
    r = cli("label", "import", str(raven), "--index", "field", "--recording", str(SOUNDSCAPE))
    assert json.loads(r.output)["added"] == 4
    listed = json.loads(cli("label", "list", "--index", "field", "--label", "chorus").output)
    assert [a["start_s"] for a in listed] == [0.0, 30.0, 60.0, 90.0]
    assert {a["provenance"] for a in listed} == {"chorus.selections.txt"}

    r = cli("classifier", "train", "--index", "field", "--name", "claps")
    trained = json.loads(r.output)
    assert trained["classifier"] == "claps:1" and trained["classes"] == ["chorus", "clap"]
    assert (
        trained["report"]["per_class"][1]["train_negatives"]
        + trained["report"]["per_class"][1]["eval_negatives"]
        == 1
    )
    assert Path(trained["directory"], "head.onnx").is_file()
    listed = json.loads(cli("classifier", "list").output)
    assert [m["name"] for m in listed] == ["claps"]
    top = json.loads(
        cli(
            "classifier", "review", "claps", "--index", "field", "--label", "clap", "-k", "2"
        ).output
    )
    assert all(w["recording_id"] == str(CLAP) and not w["labelled"] for w in top)
    hist = json.loads(
        cli("classifier", "histogram", "claps", "--index", "field", "--label", "clap").output
    )
    assert hist["sampled"] == hist["windows"] == sum(hist["counts"]) and len(hist["counts"]) == 20
    # over the whole index: every window's scores, Raven tables, call density
    out_dir = tmp_path / "applied"
    args = ("--index", "field", "--out", str(out_dir), "--format", "scores", "--format", "raven")
    applied = json.loads(cli("classifier", "apply", "claps", *args, "--density", "csv").output)
    assert applied["windows"] == hist["windows"] and applied["recordings"] == 2
    assert pq.read_table(out_dir / "scores.parquet").column_names[-2:] == ["chorus", "clap"]
    assert (out_dir / f"{CLAP.stem}.BirdNET.selection.table.txt").is_file()
    density = (out_dir / "density_recordings.csv").read_text().splitlines()
    assert len(density) == 1 + 2 * 2  # two recordings (no start time: day empty), two classes
    r = cli("classifier", "apply", "nope", *args, code=2)
    assert "classifier_not_found" in r.output
    # applied: the head's scores per window in the Parquet file, equal to the JSON weights'
    out = tmp_path / "scored.parquet"
    cli("embed", str(CLAP), "--out", str(out), "--overlap", "0", "--classifier", "claps", "--quiet")
    table = pq.read_table(out).to_pylist()
    head = ClassifierStore(tmp_path / "models").resolve("claps").head
    for row in table:
        assert row["custom_labels"] == ["chorus", "clap"]
        want = 1 / (1 + np.exp(-head(np.asarray([row["embedding"]], np.float32))[0]))
        assert np.allclose(row["custom_scores"], want, atol=1e-5)
    assert json.loads(pq.read_metadata(out).metadata[b"sevensense"])["classifier"] == "claps:1"
    r = cli(
        "embed",
        str(CLAP),
        "--out",
        str(out),
        "--model",
        "perch-contract",
        "--classifier",
        "claps",
        code=2,
    )
    assert "classifier_space_mismatch" in r.output and "perch-contract" in r.output
    r = cli("classifier", "train", "--index", "field", "--name", "x", "--labels", "chorus", code=2)
    assert "one_class_label_set" in r.output
    r = cli("classifier", "review", "nope", "--index", "field", "--label", "clap", code=2)
    assert "classifier_not_found" in r.output
