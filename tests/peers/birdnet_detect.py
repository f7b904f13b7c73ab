"""Run by the `birdnet` package's own virtualenv (.venv-birdnet), not by the project's:
BirdNET v2.4 through the BirdNET team's pipeline (LiteRT on the original TFLite), its
detections written as JSON rows for tests/test_detections_vs_birdnet.py (and timed by
bench/e2e.py, which passes its worker count and batch size)."""

import json
import sys

import birdnet

tflite, labels, audio, threshold, out = sys.argv[1:6]
workers, batch = (int(x) for x in sys.argv[6:8]) if len(sys.argv) > 7 else (1, 8)
model = birdnet.load_custom("acoustic", "2.4", "tf", tflite, labels, library="litert")
result = model.predict(
    audio,
    top_k=None,
    default_confidence_threshold=float(threshold),
    n_workers=workers,
    batch_size=batch,
)
frame = result.to_dataframe()
rows = [
    {
        "start": float(r.start_time),
        "end": float(r.end_time),
        "label": str(r.species_name),
        "confidence": float(r.confidence),
    }
    for r in frame.itertuples()
]
with open(out, "w", encoding="utf-8") as f:  # stdout carries the package's own output
    json.dump(rows, f)
