"""Both index backends through one interface, on real BirdNET windows of real recordings:
the same neighbours as exact brute force (and so as each other), filters, tenancy, deletion,
idempotent adds, model versions kept apart, and typed errors.

The embedded backend stores float16 (perch-hoplite's format), pgvector float32, so scores
agree to about 1e-3 and two windows closer than that may swap places: the comparison allows
exactly that and nothing more.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from sevensense.embeddings.poincare import poincare_distance, to_poincare
from sevensense.errors import (
    DimensionMismatchError,
    IndexEmptyError,
    IndexNotFoundError,
    VectorIndexError,
)
from sevensense.index.base import VectorIndex
from sevensense.index.hoplite import HopliteIndex
from sevensense.index.pgvector import PgVectorIndex
from sevensense.index.records import (
    EntryBatch,
    EntryMeta,
    Neighbour,
    Scope,
    SearchFilter,
    SpaceInfo,
    SpaceKey,
)
from sevensense.settings import IndexSettings
from tests.index.conftest import RealWindows

TOL = 3e-3
_names = (f"t{i}" for i in itertools.count())

# recording stem -> (recording id, tenant, site, start time)
LAYOUT = {
    "soundscape_birdnet_120s_48k": (
        "site7/soundscape",
        "a",
        "north",
        datetime(2026, 5, 1, tzinfo=UTC),
    ),
    "perch_testclip_10s_16k": ("site7/testclip", "b", "south", datetime(2026, 5, 2, tzinfo=UTC)),
    "perch_clap_21s_16k": ("site9/clap", "a", "south", datetime(2026, 6, 1, tzinfo=UTC)),
    "birdnet_sample_3s_48k": ("other/sample", "b", None, None),
}
V1 = SpaceKey(model_name="birdnet-v2.4", model_version="2.4.0")
V2 = SpaceKey(model_name="birdnet-v2.4", model_version="2.5.0")


def metas(w: RealWindows) -> list[EntryMeta]:
    out = []
    for source, start, end in zip(w.sources, w.starts, w.ends, strict=True):
        rid, tenant, site, time = LAYOUT[source]
        out.append(
            EntryMeta(
                recording_id=rid,
                source=source,
                start_s=start,
                end_s=end,
                tenant=tenant,
                site=site,
                time=time,
            )
        )
    return out


@pytest.fixture(params=["hoplite", "pgvector"])
def make_index(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[type[VectorIndex] | object]:
    opened: list[VectorIndex] = []

    def make(**overrides: int) -> VectorIndex:
        settings = IndexSettings(**overrides)
        index: VectorIndex
        if request.param == "hoplite":
            index = HopliteIndex(tmp_path / "index", next(_names), settings)
        else:
            index = PgVectorIndex(request.getfixturevalue("pg_url"), next(_names), settings)
        opened.append(index)
        return index

    yield make
    for index in opened:
        index.close()


@pytest.fixture
def filled(make_index, real_windows: RealWindows) -> tuple[VectorIndex, SpaceInfo]:  # type: ignore[no-untyped-def]
    index = make_index()
    info = SpaceInfo(key=V1, dim=real_windows.vectors.shape[1])
    added = index.add(info, EntryBatch(real_windows.vectors, metas(real_windows)))
    assert added == len(real_windows.vectors)
    return index, info


def reference(
    w: RealWindows, query: np.ndarray, k: int, keep: np.ndarray
) -> list[tuple[tuple[str, float], float]]:
    """Exact cosine over the allowed windows: ((recording id, start), score), best first."""
    scores = w.vectors @ query / (np.linalg.norm(w.vectors, axis=1) * np.linalg.norm(query))
    order = [i for i in np.argsort(-scores, kind="stable") if keep[i]]
    return [((LAYOUT[w.sources[i]][0], w.starts[i]), float(scores[i])) for i in order[:k]]


def assert_same(got: list[Neighbour], want: list[tuple[tuple[str, float], float]]) -> None:
    assert len(got) == len(want)
    by_key = dict(want)
    kth = want[-1][1] if want else 0.0
    for n, (_, score) in zip(got, want, strict=True):
        key = (n.recording_id, n.start_s)
        assert abs(n.score - score) < TOL, (key, n.score, score)  # rank-by-rank scores agree
        if key not in by_key:  # only a near-tie at the k-th place may differ
            assert abs(n.score - kth) < TOL, (key, n.score, kth)
        else:
            assert abs(by_key[key] - n.score) < TOL


def keep_mask(w: RealWindows, predicate) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([predicate(*LAYOUT[s]) for s in w.sources])


def test_neighbours_equal_exact_search(filled, real_windows: RealWindows) -> None:  # type: ignore[no-untyped-def]
    index, info = filled
    queries = real_windows.vectors[::9]
    results = index.search(info.key, queries, 10, Scope.everyone())
    everyone = np.ones(len(real_windows.vectors), dtype=bool)
    for q, got in zip(queries, results, strict=True):
        assert_same(got, reference(real_windows, q, 10, everyone))
        assert got[0].score > 0.99  # the window itself
        assert got[0].model_version == "2.4.0" and got[0].model_name == "birdnet-v2.4"


def test_filters(filled, real_windows: RealWindows) -> None:  # type: ignore[no-untyped-def]
    index, info = filled
    q = real_windows.vectors[3]
    cases = [
        (SearchFilter(recording_prefix="site7/"), lambda rid, t, s, tm: rid.startswith("site7/")),
        (SearchFilter(site="south"), lambda rid, t, s, tm: s == "south"),
        (
            SearchFilter(
                time_from=datetime(2026, 5, 2, tzinfo=UTC),
                time_to=datetime(2026, 6, 30, tzinfo=UTC),
            ),
            lambda rid, t, s, tm: (
                tm is not None
                and datetime(2026, 5, 2, tzinfo=UTC) <= tm <= datetime(2026, 6, 30, tzinfo=UTC)
            ),
        ),
        (
            SearchFilter(recording_prefix="site", site="south"),
            lambda rid, t, s, tm: s == "south",
        ),
    ]
    for flt, predicate in cases:
        got = index.search(info.key, q, 5, Scope.everyone(), flt)[0]
        assert_same(got, reference(real_windows, q, 5, keep_mask(real_windows, predicate)))
    # a prefix's own % and _ are literal characters
    assert (
        index.search(info.key, q, 5, Scope.everyone(), SearchFilter(recording_prefix="site_"))[0]
        == []
    )
    assert index.search(info.key, q, 5, Scope.everyone(), SearchFilter(site="nowhere"))[0] == []


def test_tenancy_and_delete(filled, real_windows: RealWindows) -> None:  # type: ignore[no-untyped-def]
    index, info = filled
    q = real_windows.vectors[0]  # a window of tenant a's soundscape
    for tenant in ("a", "b"):
        got = index.search(info.key, q, 50, Scope.of(tenant))[0]
        assert got and {n.tenant for n in got} == {tenant}
        assert_same(
            got,
            reference(
                real_windows,
                q,
                50,
                keep_mask(real_windows, lambda r, t, s, m, tenant=tenant: t == tenant),
            ),
        )
    admin = index.search(info.key, q, 200, Scope.everyone())[0]
    assert {n.tenant for n in admin} == {"a", "b"}

    # b may not delete a's recording; a may; the windows are gone from every answer
    assert index.delete_recording("site7/soundscape", Scope.of("b")) == 0
    n_soundscape = sum(1 for s in real_windows.sources if s == "soundscape_birdnet_120s_48k")
    assert index.delete_recording("site7/soundscape", Scope.of("a")) == n_soundscape
    after = index.search(info.key, q, 200, Scope.everyone())[0]
    assert len(after) == len(real_windows.vectors) - n_soundscape
    assert all(n.recording_id != "site7/soundscape" for n in after)
    assert [s.entries for s in index.stats()] == [len(after)]
    # an admin deletes anyone's
    assert index.delete_recording("site7/testclip", Scope.everyone()) > 0
    with pytest.raises(IndexEmptyError):
        index.search(info.key, q, 5, Scope.of("nobody"))


def test_idempotent_add(filled, real_windows: RealWindows) -> None:  # type: ignore[no-untyped-def]
    index, info = filled
    batch = EntryBatch(real_windows.vectors, metas(real_windows))
    assert index.add(info, batch) == 0
    assert index.add(info, EntryBatch(real_windows.vectors[:5], metas(real_windows)[:5])) == 0
    [stats] = index.stats()
    assert stats.entries == len(real_windows.vectors)
    assert stats.recordings == len(LAYOUT) and stats.tenants == 2
    # the same recording id and start under another tenant is another entry
    other = [m.model_copy(update={"tenant": "c"}) for m in metas(real_windows)[:3]]
    assert index.add(info, EntryBatch(real_windows.vectors[:3], other)) == 3


def test_versions_never_mix_and_errors(filled, real_windows: RealWindows) -> None:  # type: ignore[no-untyped-def]
    index, info = filled
    v2 = SpaceInfo(key=V2, dim=info.dim)
    shifted = np.roll(real_windows.vectors[:20], 1, axis=1)
    meta = [
        m.model_copy(update={"recording_id": "v2/" + m.recording_id})
        for m in metas(real_windows)[:20]
    ]
    assert index.add(v2, EntryBatch(shifted, meta)) == 20
    assert sorted(s.key.model_version for s in index.spaces()) == ["2.4.0", "2.5.0"]
    got1 = index.search(V1, shifted[0], 100, Scope.everyone())[0]
    got2 = index.search(V2, shifted[0], 100, Scope.everyone())[0]
    assert all(not n.recording_id.startswith("v2/") for n in got1)
    assert len(got2) == 20 and all(n.model_version == "2.5.0" for n in got2)
    refs = index.recordings(V2)
    assert {(r.recording_id, r.tenant) for r in refs} == {("v2/site7/soundscape", "a")}
    assert refs[0].windows == 20 and refs[0].site == "north"
    index.drop_space(V2)
    assert [s.key.model_version for s in index.spaces()] == ["2.4.0"]
    with pytest.raises(IndexNotFoundError):
        index.search(V2, shifted[0], 5, Scope.everyone())

    with pytest.raises(DimensionMismatchError) as err:
        index.search(V1, np.ones(info.dim + 1, dtype=np.float32), 5, Scope.everyone())
    assert err.value.http_status == 422
    with pytest.raises(DimensionMismatchError):
        index.add(info, EntryBatch(np.ones((1, 7), dtype=np.float32), metas(real_windows)[:1]))
    with pytest.raises(DimensionMismatchError):
        index.ensure_space(SpaceInfo(key=V1, dim=16))
    with pytest.raises(IndexNotFoundError):
        index.search(
            SpaceKey(model_name="birdnet-v2.4", model_version="9"), shifted[0], 5, Scope.everyone()
        )


def test_unknown_index_is_typed(make_index) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    with pytest.raises(IndexNotFoundError) as err:
        index.search(V1, np.ones(4, dtype=np.float32), 5, Scope.everyone())
    assert err.value.code == "index_not_found" and err.value.http_status == 404


def test_poincare_reranks_cosine_candidates(make_index, real_windows: RealWindows) -> None:  # type: ignore[no-untyped-def]
    index = make_index()
    ball = to_poincare(
        real_windows.vectors * np.linspace(0.5, 3.0, len(real_windows.vectors))[:, None]
    )
    key = SpaceKey(model_name="birdnet-v2.4", model_version="2.4.0", transform="poincare-c1-m0.999")
    info = SpaceInfo(key=key, dim=ball.shape[1], metric="poincare")
    index.add(info, EntryBatch(ball, metas(real_windows)))
    q = ball[7]
    got = index.search(key, q, 10, Scope.everyone(), metric="poincare")[0]
    d = [n.distance for n in got]
    assert d == sorted(d) and d[0] < 0.05
    # the exact answer: the best 50 by cosine, ordered by the ball's distance
    cos = (ball @ q) / (np.linalg.norm(ball, axis=1) * np.linalg.norm(q))
    cand = np.argsort(-cos)[:50]
    dist = poincare_distance(q[None, :].astype(np.float64), ball[cand].astype(np.float64))
    want = [
        (LAYOUT[real_windows.sources[i]][0], real_windows.starts[i])
        for i in cand[np.argsort(dist)][:10]
    ]
    assert [(n.recording_id, n.start_s) for n in got][:5] == want[:5]
    assert all(abs(n.score - 1 / (1 + n.distance)) < 1e-9 for n in got)


def test_graph_search_with_scope_and_filter(make_index, real_windows: RealWindows) -> None:  # type: ignore[no-untyped-def]
    """The same answers when every search goes through the HNSW graph (``exact_below=0``):
    usearch over-fetching until k windows pass, pgvector's iterative scan."""
    index = make_index(exact_below=0)
    info = SpaceInfo(key=V1, dim=real_windows.vectors.shape[1])
    index.add(info, EntryBatch(real_windows.vectors, metas(real_windows)))
    q = real_windows.vectors[5]
    got = index.search(info.key, q, 5, Scope.of("b"), SearchFilter(site="south"))[0]
    want = reference(
        real_windows, q, 5, keep_mask(real_windows, lambda r, t, s, m: t == "b" and s == "south")
    )
    assert_same(got, want)
    everyone = np.ones(len(real_windows.vectors), dtype=bool)
    for q in real_windows.vectors[::11]:
        assert_same(
            index.search(info.key, q, 10, Scope.everyone())[0],
            reference(real_windows, q, 10, everyone),
        )


def test_pg_url_from_secrets_manager(
    pg_url: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Terraform hands the entry and worker tasks a secret ARN, not a URL."""
    from urllib.parse import parse_qs, urlparse

    from sevensense.index.store import open_index
    from tests.conftest import aws_client, make_settings

    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    socket_dir = parse_qs(urlparse(pg_url).query)["host"][0]
    secret = {
        "username": "postgres",
        "password": "",
        "host": socket_dir,
        "port": 5432,
        "dbname": "postgres",
    }
    arn = aws_client("secretsmanager", moto_endpoint).create_secret(
        Name=f"index-db-{next(_names)}", SecretString=json.dumps(secret)
    )["ARN"]
    settings = make_settings(index__backend="pgvector", index__pg_secret=arn)
    index = open_index(settings, "from-secret")
    info = SpaceInfo(key=V1, dim=4)
    meta = EntryMeta(recording_id="r", start_s=0, end_s=1, tenant="t")
    assert index.add(info, EntryBatch(np.eye(4, dtype=np.float32)[:1], [meta])) == 1
    assert index.search(V1, np.eye(4, dtype=np.float32)[0], 1, Scope.of("t"))[0][0].score > 0.99
    index.close()
    settings.index.pg_secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:missing"
    with pytest.raises(VectorIndexError) as err:
        open_index(settings, "from-secret")
    assert err.value.code == "index_unavailable"
