#!/usr/bin/env bash
# Wheels that benchmarks/gpu_check.py needs on a GPU machine that has Python 3.12, CUDA torch,
# transformers, lightning, accelerate and peft, but not Hydra / OmegaConf, and cannot download.
# Run here (with network), carry the folder to the GPU machine, install from it there:
#
#   benchmarks/gpu_wheels.sh                      # -> outputs/gpu_wheels/ (git-ignored, ~0.4 MB)
#   # on the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site outputs/gpu_wheels/*.whl \
#     && PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py --out /tmp/gpu_check
#
# Versions are those of this checkout's environment (.venv), so both machines run the same
# Hydra and OmegaConf. Not carried: mlflow (large, many compiled dependencies; the check runs
# with logger.enabled=false) and trl (its row then says "trl absent"). PyYAML and packaging,
# which OmegaConf and Hydra need, come with transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-outputs/gpu_wheels}"
PY="${PYTHON:-.venv/bin/python}"
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
# pure-Python wheels, whatever this machine's platform
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
    --platform any -d "$DEST" "hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)"
# antlr4-python3-runtime 4.9.x (OmegaConf's parser runtime) is published as a source archive only:
# build its (pure-Python) wheel here
"$PY" -m pip wheel -q --no-deps -w "$DEST" "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
ls -l "$DEST"
du -sh "$DEST"
