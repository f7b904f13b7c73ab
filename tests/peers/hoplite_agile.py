"""Run by perch-hoplite's own virtualenv with TensorFlow (.venv-hoplite-agile), not by the
project's: opens an index space written by sevensense, reads the annotations sevensense
stored (hoplite's ``get_all_annotations``), loads sevensense's classifier JSON with hoplite's
``LinearClassifier.load`` and scores windows read by hoplite, then trains hoplite's own
linear classifier (``AgileDataManager`` + ``train_linear_classifier``) on the same labels
and scores the same windows; for tests/agile/test_hoplite_agile.py."""

import json
import sys

import numpy as np
from perch_hoplite.agile import classifier, classifier_data
from perch_hoplite.db import sqlite_usearch_impl

db_path, classifier_path, ids_path, steps, out = sys.argv[1:6]
db = sqlite_usearch_impl.SQLiteUSearchDB.create(db_path)
annotations = db.get_all_annotations()
ids = np.load(ids_path)
embeddings = db.get_embeddings_batch(ids)
ours = classifier.LinearClassifier.load(classifier_path)
manager = classifier_data.AgileDataManager(
    target_labels=None,
    db=db,
    train_ratio=0.9,
    min_eval_examples=1,
    batch_size=128,
    weak_negatives_batch_size=128,
    rng=np.random.default_rng(0),
)
theirs, _ = classifier.train_linear_classifier(
    manager, learning_rate=1e-3, weak_neg_weight=0.05, num_train_steps=int(steps)
)
report = {
    "annotations": sorted(
        [
            db.get_recording(a.recording_id).filename,
            float(a.offsets[0]),
            a.label,
            int(a.label_type),
            a.provenance,
        ]
        for a in annotations
    ),
    "classes": list(ours.classes),
    "their_classes": list(theirs.classes),
    "ours": ours(embeddings).tolist(),
    "theirs": theirs(embeddings).tolist(),
    "model_key": ours.embedding_model_config.model_key,
}
with open(out, "w") as f:
    json.dump(report, f)
