"""Agile modeling on real audio: how well a linear head learns the fish queries' nine call
types, and four classes of a package's labelled sample data, from 1, 2, 4, 8 and 16
labelled windows per class, how long training takes, and what the head costs inside the
model service's batch.

    make bench-agile   # = .venv/bin/python -m bench.agile [--seeds 5] [--json FILE]

Data: BirdNET v2.4 embeddings (3-s windows every ``HOP`` s, silence gate off) of the nine
fish vocalisations under ``../shared/audio/fish_queries_16k`` (one 5-7 s clip per class),
and, as unlabelled windows (weak negatives, as in the agile loop), the two soundscapes
and the hand claps. Per class the clip's windows are split in time: training windows are
drawn from those that start in its first 40 %, held-out ones start in its last 40 %. They
still overlap in time at their edges (the clips are short), so the figures measure how a
call type is recognised later in the same clip, not in a new recording: an upper bound.
Per k and seed: k training windows per class, the trainer of ``sevensense.agile.train``
(its defaults), macro ROC-AUC and average precision over the held-out windows of all nine
classes (each class against the eight others).

The larger set (``bench/sample_data.py``): pykanto 0.1.8's sample recordings of two great
tits (one class each), a Bengalese finch and European storm petrels, fetched from the
package registry into a cache at bench time; 3-s windows every ``PYKANTO_HOP`` s, every
window of a recording labelled with its class; training windows from some recordings,
held-out ones from the others (the finch's and the petrel's second recording, every other
song of each great tit): recognition in new recordings, from few of them.

Head cost: the 120-s soundscape's windows (3-s, overlap 0.5) through the CPU model
service's batch call (``ModelHost.infer``, the function BentoML calls with each adaptive
batch, here without the HTTP hop, which costs the same with and without a head) in batches
of ``serving.cpu_max_batch_size``, with and without the fish head named on every item,
interleaved rounds, the median of each: windows/s and the cost, and the head's own time as
the host measures it (``head_ms``): the ratio carries the machine's noise, the head's
share of the time does not.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.sample_data import PACKAGE, VERSION, pykanto_split
from sevensense.agile.heads import LinearHead
from sevensense.agile.metrics import average_precision, macro, roc_auc
from sevensense.agile.served_head import HeadRef
from sevensense.agile.store import Classifier, ClassifierStore
from sevensense.agile.train import TrainOptions, TrainReport, fit
from sevensense.audio.pipeline import prepare_windows
from sevensense.embeddings.transform import IDENTITY
from sevensense.index.records import SpaceInfo, SpaceKey
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions, preprocess_config
from sevensense.serving.model_service.host import ModelHost
from sevensense.serving.model_service.rpc import WindowItem, to_bytes
from sevensense.settings import load_settings, repo_root

AUDIO = repo_root().parent / "shared" / "audio"
HOP = 0.05
PYKANTO_HOP = 0.5
KS = (1, 2, 4, 8, 16)
UNLABELLED = (
    "soundscape_birdnet_120s_48k.flac",
    "xc563936_soundscape_72s_48k.mp3",
    "perch_clap_21s_16k.wav",
)


def embed(engine: EmbeddingEngine, path: Path, hop: float) -> tuple[np.ndarray, np.ndarray]:
    model = engine.model("birdnet-v2.4")
    options = EmbedOptions(overlap=1.0 - hop / 3.0, energy_threshold=0.0, top_k=0)
    rows = list(engine.embed_file(path, model=model, options=options))
    return (
        np.stack([r.embedding for r in rows]).astype(np.float32),
        np.asarray([r.start_s for r in rows]),
    )


def by_time(
    fish: dict[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One clip per class: training windows start in its first 40 %, held-out in its last."""
    pools, held = {}, {}
    for c, (vectors, starts) in fish.items():
        span = starts.max() if starts.max() > 0 else 1.0
        pools[c] = vectors[starts <= 0.4 * span]
        held[c] = vectors[starts >= 0.6 * span]
    return pools, held


def by_recording(
    engine: EmbeddingEngine, split: dict[str, tuple[list[Path], list[Path]]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Training windows from some recordings of a class, held-out ones from the others."""
    pools, held = {}, {}
    for c, (train_files, eval_files) in split.items():
        pools[c] = np.concatenate([embed(engine, p, PYKANTO_HOP)[0] for p in train_files])
        held[c] = np.concatenate([embed(engine, p, PYKANTO_HOP)[0] for p in eval_files])
    return pools, held


def curve(
    pools: dict[str, np.ndarray], held: dict[str, np.ndarray], weak: np.ndarray, seeds: int
) -> list[dict[str, Any]]:
    classes = sorted(pools)
    x_eval = np.concatenate([held[c] for c in classes])
    y_eval = np.concatenate([np.full(len(held[c]), i) for i, c in enumerate(classes)])
    rows = []
    for k in KS:
        rocs, aps, seconds, used = [], [], [], []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            picks = [
                pools[c][rng.choice(len(pools[c]), min(k, len(pools[c])), replace=False)]
                for c in classes
            ]
            x = np.concatenate(picks)
            targets = np.zeros((len(x), len(classes)), np.float32)
            targets[
                np.arange(len(x)), np.concatenate([[i] * len(p) for i, p in enumerate(picks)])
            ] = 1
            started = time.perf_counter()
            beta, bias = fit(x, targets, np.ones_like(targets, bool), weak, TrainOptions(seed=seed))
            seconds.append(time.perf_counter() - started)
            logits = x_eval @ beta + bias
            rocs.append(macro([roc_auc(logits[:, i], y_eval == i) for i in range(len(classes))]))
            aps.append(
                macro([average_precision(logits[:, i], y_eval == i) for i in range(len(classes))])
            )
            used.append(min(len(p) for p in picks))
        rows.append(
            {
                "k": k,
                "examples_per_class": min(used),
                "macro_roc_auc": float(np.mean([r for r in rocs if r is not None])),
                "macro_ap": float(np.mean([a for a in aps if a is not None])),
                "train_s": float(np.median(seconds)),
            }
        )
    return rows


def print_curve(title: str, rows: list[dict[str, Any]]) -> None:
    print(title)
    print(f"{'k':>3} {'used':>5} {'macro ROC-AUC':>14} {'macro AP':>9} {'train s':>8}")
    for r in rows:
        print(
            f"{r['k']:>3} {r['examples_per_class']:>5} {r['macro_roc_auc']:>14.3f} "
            f"{r['macro_ap']:>9.3f} {r['train_s']:>8.3f}"
        )


def _registered(head: LinearHead, models: Path) -> Classifier:
    """The head as a registered classifier of BirdNET's full space, in ``models``."""
    report = TrainReport(
        classes=list(head.classes),
        per_class=[],
        macro_roc_auc=None,
        macro_average_precision=None,
        train_windows=0,
        eval_windows=0,
        weak_negatives=0,
        seconds=0.0,
        options=TrainOptions(),
    )
    space = SpaceInfo(key=SpaceKey(model_name="birdnet-v2.4", model_version="2.4.0"), dim=head.dim)
    return ClassifierStore(models).save(
        head, name="bench", space=space, owner=None, index="bench", report=report
    )


def head_cost(head: LinearHead, tmp: Path, rounds: int) -> dict[str, Any]:
    """Windows/s of the CPU model service's batch call (``ModelHost.infer``, what BentoML
    calls with each adaptive batch) with and without the head named on every item."""
    settings = load_settings(None)
    models = tmp / "models"
    models.mkdir()
    for entry in Path(settings.models_dir).iterdir():
        (models / entry.name).symlink_to(entry.resolve())
    settings = settings.model_copy(update={"models_dir": models})
    ref = HeadRef.of(_registered(head, models), IDENTITY)
    host = ModelHost("cpu", settings)
    host.start(["birdnet-v2.4:2.4.0"])
    manifest = host.engine.model("birdnet-v2.4:2.4.0").manifest
    config = preprocess_config(
        settings, manifest, EmbedOptions(overlap=0.5, energy_threshold=0.0, top_k=0)
    )
    source = AUDIO / "soundscape_birdnet_120s_48k.flac"
    samples = [to_bytes(w.samples) for w in prepare_windows(source, config)]
    size = settings.serving.cpu_max_batch_size
    plain = [WindowItem(model=str(manifest.identity), samples=s) for s in samples]
    headed = [it.model_copy(update={"head": ref}) for it in plain]
    host.infer(headed[:size])  # loads the head's session
    spent: dict[str, list[float]] = {"without": [], "with": []}
    head_s: list[float] = []
    for _ in range(rounds):
        for mode, items in (("without", plain), ("with", headed)):
            started = time.perf_counter()
            heads = 0.0
            for i in range(0, len(items), size):
                outputs = host.infer(items[i : i + size])
                heads += outputs[0].head_ms / 1e3
            spent[mode].append(time.perf_counter() - started)
            if mode == "with":
                head_s.append(heads)
    without, with_head = float(np.median(spent["without"])), float(np.median(spent["with"]))
    windows = len(samples)
    return {
        "windows": windows,
        "batch_size": size,
        "rounds": rounds,
        "windows_per_s_without": windows / without,
        "windows_per_s_with": windows / with_head,
        "cost_with_over_without": with_head / without - 1.0,
        "head_us_per_window": float(np.median(head_s)) / windows * 1e6,
        "head_share_of_time": float(np.median(head_s)) / with_head,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    engine = EmbeddingEngine(load_settings(None))
    started = time.perf_counter()
    fish = {
        p.stem: embed(engine, p, HOP) for p in sorted((AUDIO / "fish_queries_16k").glob("*.wav"))
    }
    weak = np.concatenate([embed(engine, AUDIO / name, 1.5)[0] for name in UNLABELLED])
    embed_s = time.perf_counter() - started
    rows = curve(*by_time(fish), weak, args.seeds)
    started = time.perf_counter()
    pools, held = by_recording(engine, pykanto_split())
    pykanto_embed_s = time.perf_counter() - started
    pykanto_rows = curve(pools, held, weak, args.seeds)
    beta, bias = fit(
        np.concatenate([v for v, _ in fish.values()]),
        np.eye(len(fish), dtype=np.float32)[
            np.concatenate([[i] * len(v) for i, (v, _) in enumerate(fish.values())])
        ],
        np.ones((sum(len(v) for v, _ in fish.values()), len(fish)), bool),
        weak,
        TrainOptions(),
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cost = head_cost(LinearHead(beta, bias, tuple(sorted(fish))), Path(tmp), args.rounds)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    p: dict[str, Any] = {
        "source": f"{PACKAGE} {VERSION} wheel's sample data",
        "train_windows": {c: len(v) for c, v in pools.items()},
        "held_out_windows": {c: len(v) for c, v in held.items()},
        "embed_s": pykanto_embed_s,
        "curve": pykanto_rows,
    }
    report = {
        "windows_per_class": {c: len(v) for c, (v, _) in fish.items()},
        "weak_negatives": len(weak),
        "embed_s": embed_s,
        "curve": rows,
        "pykanto": p,
        "head_cost": cost,
        "loadavg": load,
    }
    print(f"fish call types: {len(fish)}, windows per class {report['windows_per_class']}")
    print(f"weak negatives: {len(weak)} windows; embedding took {embed_s:.1f} s")
    print_curve("fish call types, held out later in the same clip:", rows)
    print(
        f"{p['source']}: train windows {p['train_windows']}, held out (other recordings) "
        f"{p['held_out_windows']}"
    )
    print_curve("two great tits and two species, held out from other recordings:", pykanto_rows)
    c = cost
    print(
        f"head in the CPU model service's batch: {c['windows']} windows in batches of "
        f"{c['batch_size']}, median of {c['rounds']} interleaved rounds: "
        f"{c['windows_per_s_without']:.1f} windows/s without, {c['windows_per_s_with']:.1f} "
        f"with (cost {c['cost_with_over_without']:+.2%}); the head itself "
        f"{c['head_us_per_window']:.1f} us/window = {c['head_share_of_time']:.2%} of the time"
    )
    print(f"loadavg: {' '.join(load)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
