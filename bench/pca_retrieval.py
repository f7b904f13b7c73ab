"""What PCA costs in retrieval quality on real windows (ADR-007 §3.2's table, measured).

    make bench-pca   # = .venv/bin/python -m bench.pca_retrieval [--models birdnet-v2.4,...]

Every recording under ``../shared/audio`` (``labelled/`` and the fish queries included) is
embedded with heavy overlap (BirdNET: 3-s windows every 0.15 s; the Perch-contract model:
5-s windows every 0.2 s), so there are several thousand windows (silent ones are skipped,
as everywhere). The PCA is fitted on the
windows of the *unlabelled* recordings only; the labelled ones (tuxpaint animals, the
Common Yellowthroat, the Pennsylvania birdsong, the nine fish calls) are held out. For each
dimension (full, 1/2, 1/4, 1/6, 1/12 of the model's) it reports:

* memory ratio: bytes of a full float32 vector over bytes of a reduced one;
* explained variance kept (on the fitting windows);
* recall@10: of each window's 10 nearest neighbours by cosine in the full space (itself
  excluded), the share found among its 10 nearest in the reduced space; over all windows,
  and over the held-out labelled windows alone; and against the neighbours of the
  *centred* full-dimension vectors (the row "centred" keeps every component: a rotation
  of the centred vectors, so it isolates what the ADR's centring alone changes);
* label mAP on the labelled windows, two ways. *Fine*: positives are windows of the same
  label that do not overlap the query in time (each label is one recording here, so this
  asks "does another moment of the same call rank first?"; windows overlapping the query
  are removed from the ranking). *Coarse*: the animal group (bird, insect, amphibian,
  fish), positives and candidates from *other* recordings only. With a paired bootstrap
  of the difference to the full dimension that resamples *recordings* (2,000 times), not
  windows: overlapping windows of one recording are far from independent, and resampling
  them would give intervals much narrower than the evidence. Its 95 % interval says
  whether a change is more than noise.

It also checks that the Poincaré projection (exponential map at the origin, c = 1) ranks
exactly as cosine does for unit vectors (they all land on one sphere, where the ball's
distance grows with the angle): recall@10 of Poincaré-distance neighbours vs cosine ones.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sevensense.embeddings.pca import fit_pca
from sevensense.embeddings.poincare import poincare_distance, to_poincare
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.inference.recordings import embed_recordings, expand_paths
from sevensense.settings import load_settings, repo_root

REPO = repo_root()
AUDIO = REPO.parent / "shared" / "audio"
HOPS = {"birdnet-v2.4": 0.15, "perch-contract": 0.2}
FRACTIONS = (1, 2, 4, 6, 12)
K = 10

# The animal group of each labelled file's name; "xanthia" (which animal the stamp means is
# unclear) has none and stays out of the coarse mAP.
_BIRDS = frozenset(
    {
        "blackbird", "crow", "cuckoo", "drake", "duck", "gander", "hen",
        "heron_greatblue_flying", "lark", "nandou", "owl", "penguin", "quetzal", "rooster",
        "seagull", "tucan", "turkey", "vulture", "common_yellowthroat",
        "opensoundscape_birds_10s_32k",
    }
)  # fmt: skip
_INSECTS = ("bee", "grasshopper", "hornet", "mosquito")


def group_of(label: str, fish: bool) -> str | None:
    if fish:
        return "fish"
    if label in _BIRDS:
        return "bird"
    if label in _INSECTS:
        return "insect"
    if label == "frog":
        return "amphibian"
    return None


@dataclass
class Windows:
    vectors: np.ndarray  # [n, d] float32, unit norm
    recording: np.ndarray  # [n] int
    start: np.ndarray  # [n] float
    label: list[str | None]  # fine label (labelled recordings only)
    group: list[str | None]
    labelled: np.ndarray  # [n] bool
    window_s: float
    files: list[str]


def embed_all(engine: EmbeddingEngine, model_name: str) -> Windows:
    files = expand_paths([AUDIO])
    model = engine.model(model_name)
    window_s = model.manifest.window_seconds
    hop = HOPS.get(model_name, window_s / 10)
    options = EmbedOptions(overlap=1.0 - hop / window_s, top_k=0)
    rows: list[tuple[str, float, np.ndarray]] = []

    def keep(r: Any) -> None:
        if r.quality.is_valid:
            rows.append((r.source, r.start_s, r.embedding))

    embed_recordings(engine, files, keep, model=model, options=options)
    index = {str(f): i for i, f in enumerate(files)}
    labels: list[str | None] = []
    groups: list[str | None] = []
    for source, _, _ in rows:
        path = Path(source)
        fish = path.parent.name == "fish_queries_16k"
        is_labelled = fish or "labelled" in path.parts
        label = path.stem if is_labelled else None
        labels.append(label)
        groups.append(group_of(label, fish) if label else None)
    return Windows(
        vectors=np.stack([r[2] for r in rows]).astype(np.float32),
        recording=np.array([index[r[0]] for r in rows]),
        start=np.array([r[1] for r in rows]),
        label=labels,
        group=groups,
        labelled=np.array([lab is not None for lab in labels]),
        window_s=window_s,
        files=[str(f.relative_to(AUDIO)) for f in files],
    )


def knn(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Indices of the k most cosine-similar rows of ``vectors`` for each query row index."""
    sims = vectors[queries] @ vectors.T
    sims[np.arange(len(queries)), queries] = -np.inf
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return top


def recall_at_k(full: np.ndarray, reduced: np.ndarray, queries: np.ndarray) -> float:
    a, b = knn(full, queries), knn(reduced, queries)
    hits = [len(set(x) & set(y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    return float(np.mean(hits) / K)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def label_aps(w: Windows, vectors: np.ndarray, coarse: bool) -> dict[int, float]:
    """AP per query window (index → AP); queries without a positive are left out."""
    out: dict[int, float] = {}
    idx = np.flatnonzero(w.labelled)
    keys = w.group if coarse else w.label
    key = np.array([keys[i] or "" for i in idx])
    rec, start = w.recording[idx], w.start[idx]
    sims = vectors[idx] @ vectors[idx].T
    for q in range(len(idx)):
        if not key[q]:
            continue
        same_rec = rec == rec[q]
        if coarse:
            candidate = ~same_rec & (key != "")
        else:
            candidate = ~(same_rec & (np.abs(start - start[q]) < w.window_s))
        positive = (key == key[q]) & candidate
        if not positive.any():
            continue
        out[int(idx[q])] = average_precision(sims[q][candidate], positive[candidate])
    return out


def paired_ci(
    base: dict[int, float],
    other: dict[int, float],
    recording: np.ndarray,
    rng: np.random.Generator,
) -> str:
    """Mean AP difference and a 95 % interval from a cluster bootstrap over recordings."""
    keys = sorted(base)
    if not keys:
        return "no queries"
    diff = np.array([other[k] - base[k] for k in keys])
    rec = recording[keys]
    ids = np.unique(rec)
    sums = np.array([diff[rec == r].sum() for r in ids])
    counts = np.array([(rec == r).sum() for r in ids])
    picks = rng.integers(0, len(ids), size=(2000, len(ids)))
    boot = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return f"{diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"


def run_model(engine: EmbeddingEngine, model_name: str, rng: np.random.Generator) -> dict[str, Any]:
    t0 = time.perf_counter()
    w = embed_all(engine, model_name)
    embed_s = time.perf_counter() - t0
    n, d = w.vectors.shape
    fit_rows = ~w.labelled
    everyone = np.arange(n)
    held_out = np.flatnonzero(w.labelled)
    base_fine = label_aps(w, w.vectors, coarse=False)
    base_coarse = label_aps(w, w.vectors, coarse=True)
    # Keeping all d components is a rotation of the centred vectors, which leaves their
    # cosines as they are: this row isolates what the ADR's centring alone changes.
    shifted = w.vectors - w.vectors[fit_rows].mean(axis=0, dtype=np.float64)
    centred = (shifted / np.linalg.norm(shifted, axis=1, keepdims=True)).astype(np.float32)
    rows = []
    for fraction in (*FRACTIONS[:1], 0, *FRACTIONS[1:]):
        if fraction == 1:
            vectors, kept = w.vectors, 1.0
        elif fraction == 0:
            vectors, kept = centred, 1.0
        else:
            pca = fit_pca(w.vectors[fit_rows], d // fraction)
            vectors, kept = pca.apply(w.vectors), pca.kept_variance
        k = vectors.shape[1]
        fine = label_aps(w, vectors, coarse=False)
        coarse = label_aps(w, vectors, coarse=True)
        rows.append(
            {
                "dim": f"{k} centred" if fraction == 0 else str(k),
                "memory_ratio": d / k,
                "explained_variance": kept,
                "recall_at_10_all": recall_at_k(w.vectors, vectors, everyone),
                "recall_at_10_held_out": recall_at_k(w.vectors, vectors, held_out),
                "recall_at_10_vs_centred": recall_at_k(centred, vectors, everyone),
                "map_fine": float(np.mean(list(fine.values()))) if fine else float("nan"),
                "map_fine_vs_full": (
                    "—" if fraction == 1 else paired_ci(base_fine, fine, w.recording, rng)
                ),
                "map_coarse": float(np.mean(list(coarse.values()))) if coarse else float("nan"),
                "map_coarse_vs_full": (
                    "—" if fraction == 1 else paired_ci(base_coarse, coarse, w.recording, rng)
                ),
            }
        )
    ball = to_poincare(w.vectors.astype(np.float64))
    sample = rng.choice(n, size=min(n, 300), replace=False)
    hyper_hits = []
    cosine_top = knn(w.vectors, sample)
    for q, top in zip(sample.tolist(), cosine_top.tolist(), strict=True):
        dist = poincare_distance(ball[q][None, :], ball)
        dist[q] = np.inf
        hyper_hits.append(len(set(np.argpartition(dist, K)[:K].tolist()) & set(top)) / K)
    return {
        "model": str(engine.model(model_name).identity),
        "embedding_dim": d,
        "windows": n,
        "fit_windows": int(fit_rows.sum()),
        "labelled_windows": int(w.labelled.sum()),
        "labels": len({lab for lab in w.label if lab}),
        "fine_queries": len(base_fine),
        "coarse_queries": len(base_coarse),
        "recordings": len(w.files),
        "hop_s": HOPS.get(model_name),
        "embed_s": round(embed_s, 1),
        "poincare_vs_cosine_recall_at_10": float(np.mean(hyper_hits)),
        "poincare_queries": len(sample),
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['model']}: {result['windows']} windows from {result['recordings']} recordings "
        f"(hop {result['hop_s']} s); PCA fitted on {result['fit_windows']} unlabelled windows; "
        f"{result['labelled_windows']} held-out labelled windows, {result['labels']} labels "
        f"({result['fine_queries']} fine / {result['coarse_queries']} coarse queries)",
        "",
        "| dim | memory | variance kept | recall@10 all | recall@10 held-out | recall@10 vs "
        "centred full | mAP fine (Δ vs full, 95 % CI) | mAP coarse (Δ vs full, 95 % CI) |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['dim']} | {r['memory_ratio']:.1f}× | {r['explained_variance']:.3f} | "
            f"{r['recall_at_10_all']:.3f} | {r['recall_at_10_held_out']:.3f} | "
            f"{r['recall_at_10_vs_centred']:.3f} | "
            f"{r['map_fine']:.3f} ({r['map_fine_vs_full']}) | "
            f"{r['map_coarse']:.3f} ({r['map_coarse_vs_full']}) |"
        )
    lines.append(
        f"\nPoincaré (c = 1) distance vs cosine, recall@10 on {result['poincare_queries']} "
        "queries: "
        f"{result['poincare_vs_cosine_recall_at_10']:.3f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="birdnet-v2.4,perch-contract")
    parser.add_argument("--json", type=Path, default=REPO / "out" / "bench" / "pca_retrieval.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = load_settings()
    settings.inference.providers = ["cpu"]
    engine = EmbeddingEngine(settings)
    rng = np.random.default_rng(args.seed)
    results = []
    for name in args.models.split(","):
        result = run_model(engine, name.strip(), rng)
        results.append(result)
        print(table(result), flush=True)
        print(flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"-> {args.json}")


if __name__ == "__main__":
    main()
