#!/usr/bin/env bash
# GPU checks (issue 16), one prepared script for a lent GPU machine with JAX (CUDA), diffrax,
# equinox, optax, jaxtyping, tqdm and scikit-learn installed (matplotlib is not needed: nothing
# here draws). Writes into $OUT (default benchmarks/results).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh     # at most BUDGET=570 s of steps; OUT should be empty:
#                                                 # cost.py keeps an entry already in its file
#   (then merge the JSONs into benchmarks/results/*_gpu.json by hand, with the lease's notes)
#   OUT=/tmp/dry ALLOW_CPU=1 STEPS=60 LRS=4 CENTRAL_STEPS=30 bash benchmarks/gpu_check.sh  # dry run on a CPU
#
# First it fails fast unless JAX's default backend is a GPU (no silent CPU fallback). Then its
# steps run in order of priority, each under its own time limit, and a step whose limit no
# longer fits in what is left of BUDGET seconds is skipped (reported, not failed), so that the
# whole call fits in one 10-minute device call with its start. The limits come from the first
# lent GPU (2026-11-30, an H200, benchmarks/results/gpu_check_2026-11-30.log): there,
# `cost.py` on mlp-digits took 84 s (float64) and 101 s (float32) end to end, XLA compiled each
# flow in 8-16 s (twice this 2-core CPU's time) and one 1000-step compare took 46 s end to end.
# The second lease (same day, gpu_check_2026-11-30-b.log) measured cnn-digits (148 s for float32),
# the 64-lr sweep (174 s), the batching check (46 s) and the command buffers (86 s); Central Flow
# over 100 steps did not finish in 150 s. What is still missing comes first:
#  1. Central Flow over its first CENTRAL_STEPS (30) steps on mlp-digits float32, against a GD
#     step in the same process, into $OUT/cost_central_gpu.json;
#  2. mlp-digits float32 with the default XLA flags, then its discrete run with the fixed-cost
#     Krylov sharpness estimator (4 blocks: no convergence loop, so no host round trip per
#     measurement) against the default LOBPCG one (eig_alt in $OUT/cost_gpu.json), then
#  3. the same with XLA's command buffers taking the `while` loops and `conditional`s too (CUDA
#     graphs with conditional nodes: the predicates stay on the device), so that the two rows
#     come from one machine (the lease that measured the second found the GD step 4x slower
#     with them), into $OUT/cost_gpu.json and $OUT/cost_cmdbuf_gpu.json;
#  4. on a machine with several GPUs: a data-parallel compare (mlp-digits, 512 examples split over
#     every GPU, float64) against the one-GPU run, metric by metric, into $OUT/data_parallel_gpu.json;
#  5. the sweep check again (one compare run against a 64-lr sweep on mlp-digits), into
#     $OUT/sweep_throughput_gpu.json.
# A step that fails or runs out of time is reported and the script goes on to the next one (exit
# status 1 at the end if any failed). Every step writes its file as soon as it ends.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
PY=${PY:-python3}
STEPS=${STEPS:-1000} LRS=${LRS:-64} CENTRAL_STEPS=${CENTRAL_STEPS:-30} ALLOW_CPU=${ALLOW_CPU:-0}
BUDGET=${BUDGET:-570}
status=0
step() {  # step SECONDS command...
  local limit=$1; shift
  if [ $((SECONDS + limit)) -gt "$BUDGET" ]; then
    echo "== skipped (needs ${limit}s, $((BUDGET - SECONDS))s of the budget left): $*"; return
  fi
  echo "== $* (limit ${limit}s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@"; local rc=$?
  echo "== rc=$rc after $((SECONDS - t0))s"
  [ "$rc" -eq 0 ] || { echo "FAILED: $*"; status=1; }
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu_device.txt" 2>&1 || true
echo "rodflow commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >> "$OUT/gpu_device.txt"
ALLOW_CPU=$ALLOW_CPU $PY - <<'PYEOF' | tee -a "$OUT/gpu_device.txt" || { echo "no GPU backend: stopping"; exit 2; }
import os, sys, jax
print(sys.version.split()[0], "jax", jax.__version__, jax.default_backend(), jax.devices())
sys.exit(0 if jax.default_backend() == "gpu" or os.environ["ALLOW_CPU"] == "1" else 1)
PYEOF

COST="$PY benchmarks/cost.py --steps $STEPS --out $OUT/cost_gpu.json"
step 240 $PY benchmarks/cost.py --problem mlp-digits --steps "$CENTRAL_STEPS" --central-steps "$CENTRAL_STEPS" \
  --flows rod --out "$OUT/cost_central_gpu.json"
step 120 $COST --problem mlp-digits --flows rod
step 90 $COST --problem mlp-digits --eig-method-alt krylov --eig-iters-alt 4 --alt-only
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL" \
  step 110 $PY benchmarks/cost.py --problem mlp-digits --steps "$STEPS" --flows rod --out "$OUT/cost_cmdbuf_gpu.json"
step 90 $PY - "$OUT/data_parallel_gpu.json" <<'PYEOF'
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import rodflow
n = len(jax.devices())
if n < 2:
    print("one GPU: no data-parallel run"); sys.exit(0)
n = max(d for d in (2, 4, 8, 16) if d <= n)
p = rodflow.problems.get("mlp-digits", n=512)
kw = dict(lr=0.07, steps=500, flows=("discrete", "stable", "rod"), progress=False, figure=False)
one, many = rodflow.compare(p, **kw), rodflow.compare(p, devices=n, **kw)
def flat(d, pre=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, pre + k + "/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield pre + k, v
a, b = dict(flat(one.metrics)), dict(flat(many.metrics))
rel = {k: abs(a[k] - b[k]) / max(abs(a[k]), 1e-300) for k in a
       if k in b and not any(s in k for s in ("wall_s", "compile_s", "mesh/"))}
out = {"devices": n, "device": str(jax.devices()[0]), "max_rel_diff": max(rel.values()),
       "worst_metric": max(rel, key=rel.get),
       "wall_s": {k: [one.metrics["flows"][k]["wall_s"], many.metrics["flows"][k]["wall_s"]] for k in kw["flows"]}}
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(out)
PYEOF
step 200 $PY benchmarks/sweep_throughput.py --gpu --lrs "$LRS" --steps "$STEPS" --out "$OUT/sweep_throughput_gpu.json"
exit $status
