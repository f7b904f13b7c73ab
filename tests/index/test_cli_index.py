"""The index from the command line (in process, through click's runner): ``embed --index``,
``index add|list|stats|delete|reindex`` and ``search``, on the embedded backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sevensense.cli import main
from tests.conftest import MODELS, audio

CLIP = audio("perch_testclip_10s_16k.wav")
SAMPLE = audio("birdnet_sample_3s_48k.wav")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SEVENSENSE_INDEX__DIR", str(tmp_path / "index"))
    monkeypatch.setenv("SEVENSENSE_INFERENCE__PROVIDERS", '["cpu"]')

    def run(*args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(main, ["--models-dir", str(MODELS), *args])
        assert result.exit_code == code, result.output + repr(result.exception)
        return result

    return run


def test_embed_add_search_delete_reindex(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "clip.parquet"
    r = cli(
        "embed",
        str(CLIP),
        "--out",
        str(out),
        "--overlap",
        "0.5",
        "--index",
        "field",
        "--site",
        "north",
        "--quiet",
    )
    assert "6 new of 6 windows -> index field/birdnet-v2.4@2.4.0@full" in r.output
    # the same windows again, from the Parquet file: nothing new; under another tenant: new
    r = cli("index", "add", str(out), "--index", "field", "--site", "north")
    assert "0 new of 6 windows" in r.output
    r = cli(
        "index",
        "add",
        str(out),
        "--index",
        "field",
        "--tenant",
        "guest",
        "--recording-id",
        "guest/clip",
    )
    assert "6 new of 6 windows" in r.output

    listing = json.loads(cli("index", "list", "--json").output)
    assert listing["backend"] == "hoplite"
    assert [s["key"]["model_version"] for s in listing["indexes"]["field"]] == ["2.4.0"]
    [stats] = json.loads(cli("index", "stats", "--index", "field", "--json").output)
    assert (stats["entries"], stats["recordings"], stats["tenants"]) == (12, 2, 2)

    r = cli(
        "search", str(CLIP), "--index", "field", "-k", "2", "--window", "0", "--tenant", "local"
    )
    lines = r.output.splitlines()
    assert lines[0].startswith("query window 0 (0.00-3.00 s)")
    assert f"{CLIP}  0.00-3.00 s  similarity 1.0" in lines[1]
    found = json.loads(
        cli(
            "search",
            str(out),
            "--index",
            "field",
            "-k",
            "3",
            "--filter",
            "recording=guest/",
            "--json",
        ).output
    )
    assert len(found["queries"]) == 6
    assert all(n["recording_id"] == "guest/clip" for q in found["queries"] for n in q["neighbours"])
    r = cli("search", str(CLIP), "--index", "field", "--filter", "bogus=1", code=2)

    # a new model version: the old space's recordings embedded again, tenants and sites kept
    r = cli(
        "index",
        "reindex",
        "--index",
        "field",
        "--model",
        "perch-contract",
        "--from-space",
        "birdnet-v2.4@2.4.0@full",
    )
    assert "perch-contract@1.0.0@full: rebuilt" in r.output
    [_, new] = json.loads(cli("index", "stats", "--index", "field", "--json").output)
    assert new["space"]["key"]["model_name"] == "perch-contract"
    assert (new["tenants"], new["recordings"]) == (2, 2) and new["entries"] % 2 == 0

    r = cli("index", "delete", "--index", "field", "--recording", str(CLIP), "--tenant", "guest")
    assert r.output.startswith("0 windows")
    r = cli("index", "delete", "--index", "field", "--recording", str(CLIP))
    assert int(r.output.split()[0]) == 6 + new["entries"] // 2  # local's, in both spaces
    r = cli("search", str(SAMPLE), "--index", "nosuch", code=2)
    assert "index_not_found" in r.output
    # what an operator runs before handing a copy to perch-hoplite
    r = cli("index", "compact", "--index", "field")
    lines = sorted(r.output.splitlines())
    assert len(lines) == 2 and all(" compacted in " in line for line in lines)
    assert lines[0].startswith("field/birdnet-v2.4@2.4.0@full:")
    [old, _] = json.loads(cli("index", "stats", "--index", "field", "--json").output)
    assert old["entries"] == 6  # guest's windows remain, and only they
    assert "nothing to compact" in cli("index", "compact", "--index", "empty").output
