"""The `sevensense` command line, run as a real subprocess on real recordings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import MODELS, REPO, audio


def run(*args: str, check: bool = False, models: Path = MODELS) -> subprocess.CompletedProcess[str]:
    cli = [sys.executable, "-m", "sevensense.cli", "--models-dir", str(models)]
    return subprocess.run(
        [*cli, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=check
    )


@pytest.fixture
def mixed_dir(tmp_path: Path) -> Path:
    d = tmp_path / "deployment"
    (d / "site_a").mkdir(parents=True)
    shutil.copy(audio("perch_testclip_10s_16k.flac"), d / "site_a" / "clip.flac")
    shutil.copy(audio("labelled/tuxpaint/owl.ogg"), d / "site_a" / "owl.ogg")
    (d / "broken.wav").write_bytes(b"RIFF....WAVEjunkjunkjunk" * 10)
    (d / "notes.txt").write_text("not audio, and not picked up by directory expansion")
    return d


def test_embed_directory_with_a_corrupt_file(
    perch_artifact, mixed_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out" / "emb.parquet"
    proc = run("embed", str(mixed_dir), "--model", "perch-contract", "--out", str(out), "--quiet")
    assert proc.returncode == 1, proc.stderr  # partial success
    assert "broken.wav" in proc.stderr and "failed" in proc.stderr
    table = pq.read_table(out)
    sources = {Path(s).name for s in table.column("source").to_pylist()}
    assert sources == {"clip.flac", "owl.ogg"}
    assert table.num_rows == 4  # 3 windows (50 % overlap) + 1 padded short clip
    emb = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert emb.shape == (4, 1536)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert set(table.column("model_name").to_pylist()) == {"perch-contract"}
    summary = json.loads(pq.read_metadata(out).metadata[b"sevensense"])
    statuses = {Path(r["source"]).name: r["status"] for r in summary["recordings"]}
    assert statuses == {"broken.wav": "failed", "clip.flac": "ok", "owl.ogg": "ok"}
    assert summary["provider"] == "CPUExecutionProvider"


def test_embed_hop_and_npz(perch_artifact, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "emb.npz"
    proc = run(
        "embed",
        str(audio("perch_testclip_10s_16k.wav")),
        "--model",
        "perch-contract",
        "--hop",
        "1.25",
        "--padding",
        "discard",
        "--top-k",
        "2",
        "--out",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    data = np.load(out)
    assert data["embeddings"].shape == (5, 1536)
    assert list(data["start_s"]) == [0.0, 1.25, 2.5, 3.75, 5.0]
    assert data["top_labels"].shape == (5, 2)
    assert json.loads(str(data["summary"]))["windows"] == 5


def test_all_inputs_bad_exits_2(perch_artifact, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "empty.flac"
    bad.write_bytes(b"")
    proc = run(
        "embed",
        str(bad),
        "--model",
        "perch-contract",
        "--out",
        str(tmp_path / "o.parquet"),
        "--quiet",
    )
    assert proc.returncode == 2
    assert "empty_audio" in proc.stderr


def test_unknown_model_and_bad_usage_exit_2(tmp_path: Path) -> None:
    proc = run(
        "embed",
        str(audio("birdnet_sample_3s_48k.wav")),
        "--model",
        "dodo-v1",
        "--out",
        str(tmp_path / "o.parquet"),
    )
    assert proc.returncode == 2 and "model_not_found" in proc.stderr
    proc = run("--profile", "moon", "models", "list")
    assert proc.returncode == 2 and "unknown profile" in proc.stderr


def test_models_list_and_verify(perch_artifact) -> None:  # type: ignore[no-untyped-def]
    listed = json.loads(run("models", "list", "--json", check=True).stdout)
    by_name = {row["model"]: row for row in listed}
    assert by_name["perch-contract:1.0.0:base"]["test_artifact"] is True
    assert by_name["perch-v2:2.0.0:base"]["present"] is False
    proc = run("models", "verify", "perch-contract")
    assert proc.returncode == 0 and "ok perch-contract" in proc.stdout


def test_models_import_and_refusal_of_a_tampered_file(perch_artifact, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    models = tmp_path / "models"
    src = perch_artifact.directory
    manifest = str(src / "manifest.json")
    proc = run("models", "import", str(src / "model.onnx"), "--manifest", manifest, models=models)
    assert proc.returncode == 0, proc.stderr
    assert "ok perch-contract:1.0.0:base" in proc.stdout
    assert (models / "perch-contract" / "1.0.0" / "base" / "model.onnx").is_file()

    tampered = tmp_path / "tampered.onnx"
    data = bytearray((src / "model.onnx").read_bytes())
    data[-100] ^= 0x55
    tampered.write_bytes(bytes(data))
    other = tmp_path / "other-models"
    proc = run("models", "import", str(tampered), "--manifest", manifest, models=other)
    assert proc.returncode == 2 and "checksum_mismatch" in proc.stderr
    assert not (other / "perch-contract" / "1.0.0" / "base" / "model.onnx").exists()
