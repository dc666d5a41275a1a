#!/usr/bin/env bash
# A benchmark-only environment for benchmarks/bench_speed.py (issue 18) and bench_nile.py (issue 21):
# invae plus the pyPLNmodels baseline and statsmodels (its local-level model and the Nile data),
# kept apart from the project's .venv (make demo / make test / CI never see pyPLNmodels,
# statsmodels, pandas, seaborn, patsy or networkx).
#
#     bash benchmarks/setup_bench_env.sh            # creates benchmarks/.venv-bench once
#     benchmarks/.venv-bench/bin/python benchmarks/bench_speed.py
#
# torch stays at the pinned CPU build: every install goes through requirements/constraints.txt
# (torch==2.13.0), so pip never resolves another torch (pyPLNmodels 1.0.10 asks for an
# unversioned `torch`). setuptools<81: pyPLNmodels' data loaders import pkg_resources, which
# setuptools 81 dropped. Rerun with FORCE=1 to rebuild.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/benchmarks/.venv-bench"
PYTHON="${PYTHON:-python3}"
[ -x "$ROOT/.venv/bin/python" ] && PYTHON="$ROOT/.venv/bin/python"

if [ -f "$VENV/.installed" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "$VENV is ready (FORCE=1 to rebuild)"
    exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$ROOT/requirements/constraints.txt" \
    -e "$ROOT" "pyPLNmodels==1.0.10" "statsmodels==0.15.0" "setuptools<81"
"$VENV/bin/python" - <<'PY'
import torch, pyro, pyPLNmodels, statsmodels
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert not torch.version.cuda, "a CUDA torch was installed"
print("torch", torch.__version__, "| pyro", pyro.__version__, "| pyPLNmodels", pyPLNmodels.__version__,
      "| statsmodels", statsmodels.__version__)
PY
touch "$VENV/.installed"
