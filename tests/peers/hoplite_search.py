"""Run by perch-hoplite's own virtualenv (.venv-hoplite), not by the project's: opens an
index space written by sevensense with hoplite's reader (``SQLiteUSearchDB``), reads the
metadata its agile-modeling tools use, and searches it, for tests/index/test_hoplite_compat.py.
"""

import json
import sys

import numpy as np
from perch_hoplite.db import sqlite_usearch_impl

db_path, queries_path, k, out = sys.argv[1:5]
db = sqlite_usearch_impl.SQLiteUSearchDB.create(db_path, readonly=True)
metadata = db.get_metadata(None)
results = []
for query in np.load(queries_path):
    found = db.search(query.astype(np.float32), search_list_size=int(k), approximate=False)
    hits = []
    for r in found:
        window = db.get_window(r.window_id)
        recording = db.get_recording(window.recording_id)
        hits.append(
            {
                "filename": recording.filename,
                "start_s": float(window.offsets[0]),
                "end_s": float(window.offsets[1]),
                "score": float(r.sort_score),
                "tenant": window.tenant,
            }
        )
    results.append(hits)
report = {
    "embedding_dim": db.get_embedding_dim(),
    "count": db.count_embeddings(),
    "model_key": metadata["model_config"]["model_key"],
    "model_embedding_dim": metadata["model_config"]["embedding_dim"],
    # what agile.source_info.AudioSources and agile.embed.ModelConfig are built from (that
    # module imports librosa, which this slim environment leaves out)
    "audio_globs": json.loads(metadata["audio_sources"].to_json())["audio_globs"],
    "model_config": json.loads(metadata["model_config"].to_json()),
    "extra_columns": {t: sorted(c) for t, c in db.get_extra_table_columns().items()},
    "projects": sorted(db.get_all_projects()),
    "results": results,
}
with open(out, "w", encoding="utf-8") as f:
    json.dump(report, f)
