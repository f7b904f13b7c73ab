# The two newcomer commands are `make run` and `make test` (see README.md).
.PHONY: setup run test lint bench bench-perch

setup:
	./scripts/bootstrap.sh

run: setup
	./scripts/run.sh

test: setup
	./scripts/test.sh

lint: setup
	.venv/bin/ruff check service tests bench load_tests
	.venv/bin/ruff format --check service tests bench load_tests
	.venv/bin/mypy

bench: setup
	.venv/bin/python -m bench.run_all

# Batch-size curve on a Perch-sized random-weight model: chooses serving.cpu_max_batch_size.
bench-perch: setup
	.venv/bin/python -m bench.batch_curve --model perch-sized --provider cpu

# On a GPU host (< 5 min, JSON): the provider really used, CUDA vs CPU parity on real windows,
# CUDA batch curves (BirdNET, Perch-sized), the service at 32 users on the GPU path.
# Exits 2 at once, with the reason, where CUDA cannot run.
.PHONY: gpu-check
gpu-check: setup
	.venv/bin/python -m bench.gpu_check

# ORT threads under a busy neighbour (~5 min): sevensense embed of 20 min of audio, quiet and
# with a niced busy loop on one core, today's thread defaults vs the previous ones (JSON).
.PHONY: bench-threads
bench-threads: setup
	.venv/bin/python -m bench.threads

# Issue 15's figures in one run (~10 min): int8/fp16 variants vs fp32 (bench/variants.py) and
# the threads benchmark above, with sevensense embed of 20 minutes of audio in x real time.
.PHONY: bench-runtime
bench-runtime: setup
	.venv/bin/python -m bench.runtime

# S3 batch worker on moto (~3 min): 20-file job vs the CLI (x real time), peak RSS 10 min vs 2 h.
# PCA retrieval quality on real windows (~3 min): memory, recall@10, label mAP per dimension.
.PHONY: bench-pca
bench-pca: setup
	.venv/bin/python -m bench.pca_retrieval

# Agile modeling on real audio (~5 min): macro ROC-AUC/AP of a linear head on the fish
# call types vs labelled windows per class (1-16), training time, the head's cost per window.
.PHONY: bench-agile
bench-agile: setup
	OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.agile

.PHONY: bench-worker
bench-worker: setup
	.venv/bin/python -m bench.worker_throughput

# Similarity search (~9 min): both index backends on real and clustered synthetic vectors,
# /search at 8 users, peak RSS indexing a 2-hour recording.
.PHONY: bench-index
bench-index: setup
	.venv/bin/python -m bench.index

# HTTP load benchmark (Locust, headless, ~2 min): start-up, req/s and latency at 1/8/32 users.
.PHONY: load
load: setup
	.venv/bin/python -m load_tests.run

# A local fleet (Ctrl-C stops it): HAProxy → two entry processes → one CPU model service by URL.
.PHONY: fleet
fleet: setup
	.venv/bin/python -m load_tests.cluster

# The fleet under faults (~3 min): 16 real-time streams and uploads while one entry is SIGKILLed
# and the other SIGTERMed: failures, windows lost/duplicated, resumes, drain time, latency.
.PHONY: load-fleet
load-fleet: setup
	.venv/bin/python -m load_tests.fleet

# The front door under abuse (~1 min): well-behaved latency with crawling and unauthenticated uploads.
.PHONY: load-front-door
load-front-door: setup
	.venv/bin/python -m load_tests.front_door

# What BirdNET verification costs /embed (~7 min): 32 users, verify=false / shadow 10 % / verify=true.
.PHONY: load-verification
load-verification: setup
	.venv/bin/python -m load_tests.verification

# Live streams on WS /stream (~6 min): 16 sensors at real time (window latency p50/p99,
# windows/s), then doubling until a window's p99 latency exceeds one hop.
.PHONY: load-streams
load-streams: setup
	.venv/bin/python -m load_tests.streams

# The offline CLI path: embed a shipped recording and print the top species per window.
.PHONY: quickstart bento
quickstart: setup
	./scripts/quickstart.sh

# The documentation site (docs/, mkdocs.yml), offline, into out/site/ (open out/site/index.html).
# --strict: a link to a missing page or anchor fails the build.
.PHONY: docs
docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -d out/site

# Build the Bento (offline) into $BENTOML_HOME (default ~/bentoml); containerize needs Docker.
bento: setup
	BENTOML_DO_NOT_TRACK=true .venv/bin/bentoml build -f bentofile.yaml

# Structure-aware audio fuzzing (~3 min): issue 27's named files and 300 mutants through the
# CLI and POST /embed, 4 clients; outcome classes, 5xx, drops, latency, RSS, disagreements.
.PHONY: fuzz
fuzz: setup
	.venv/bin/python -m load_tests.fuzz --n $${N:-300}

# The long run (~15 min on 2 cores): 2,000 mutants; add CODE=<checkout>/service for old code.
.PHONY: bench-fuzz
bench-fuzz: setup
	.venv/bin/python -m load_tests.fuzz --n $${N:-2000} $${CODE:+--code $$CODE} --json fuzz.json

# BirdNET-Analyzer 2.4.0 (its own virtualenv) vs sevensense detect, whole process, on the
# 120-s soundscape and 20 minutes of it (~12 min), and resampy kaiser_fast vs soxr HQ.
.PHONY: bench-birdnet-analyzer
bench-birdnet-analyzer: setup
	.venv/bin/python -m bench.birdnet_analyzer

# Speed against the peers (~15 min; issue 25): whole process on 20 minutes of audio, quiet and
# with a busy neighbour (sevensense embed/detect vs the birdnet package vs BirdNET-Analyzer
# where its venv exists), engine windows/s vs raw ORT/OpenVINO vs the fp32 GEMM limit (JSON).
.PHONY: bench-e2e
bench-e2e: setup
	.venv/bin/python -m bench.e2e

# Add latency vs index size on hoplite (~10 min): small adds at 10k → 1M 256-d vectors, ours
# (append log) vs the old rewrite-on-every-add in the same run, compaction time (JSON).
.PHONY: bench-index-adds
bench-index-adds: setup
	.venv/bin/python -m bench.index_adds

# Add p99 across compactions on hoplite (~3 min): inline vs on the background thread, interleaved.
.PHONY: bench-index-compaction
bench-index-compaction: setup
	.venv/bin/python -m bench.index_adds --across-compaction 100000 --cycles 2

# Sustained ingest (~5 min): 64 real-time streams with index=true through a real server vs
# without, window p99 and /search p99 meanwhile (JSON in out/bench/).
.PHONY: bench-index-ingest
bench-index-ingest: setup
	.venv/bin/python -m bench.index_ingest --streams 64 --seconds 100

# The index at scale (~20 min here; more with 1M): hoplite at 100k/300k/1M × 256-d and 1024-d,
# pgvector at 100k × 256-d: build time, disk, RSS, recall@10, p50/p99 at 1 and 8 callers,
# filtered and unfiltered (JSON in out/bench/). --sizes/--dims/--budget-s choose how far.
.PHONY: bench-index-scale
bench-index-scale: setup
	.venv/bin/python -m bench.index_scale
