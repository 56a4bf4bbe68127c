#!/usr/bin/env bash
# GPU checks (issue 16), one prepared script for a lent GPU machine with JAX (CUDA), diffrax,
# equinox, optax, jaxtyping, tqdm and scikit-learn installed (matplotlib is not needed: nothing
# here draws). Writes into $OUT (default benchmarks/results); at most 10 minutes in all (its steps' limits).
#
#   OUT=benchmarks/results bash benchmarks/gpu_check.sh
#   OUT=/tmp/dry ALLOW_CPU=1 STEPS=60 LRS=4 bash benchmarks/gpu_check.sh   # a dry run of the script on a CPU
#
# 0. fail fast unless JAX's default backend is a GPU (no silent CPU fallback);
# 1. the GPU rows of cost.json: benchmarks/cost.py on mlp-digits and cnn-digits, float32 and
#    float64 (GD step, Rod Flow, the discrete run's sharpness tracking, gradient flow, compile
#    times, accuracy beside each), into $OUT/cost_gpu.json;
# 2. the sweep check: one compare run against a 64-lr sweep on mlp-digits (per-lane overhead),
#    into $OUT/sweep_throughput_gpu.json, then a gradient, an HVP and a LOBPCG solve alone and
#    vmapped over the same 64 parameter vectors (what batching alone gains on this device);
# 2b. Central Flow over its first 100 steps on mlp-digits float32, against a GD step in the same
#    process, into $OUT/cost_central_gpu.json;
# 3. on a machine with several GPUs: a data-parallel compare (mlp-digits, 512 examples split over
#    every GPU, float64) against the one-GPU run, metric by metric, into $OUT/data_parallel_gpu.json.
# Every step has its own time limit; a step that fails or runs out of time is reported and the
# script goes on to the next one (exit status 1 at the end if any failed).
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
PY=${PY:-python3}
STEPS=${STEPS:-1000} LRS=${LRS:-64} CENTRAL_STEPS=${CENTRAL_STEPS:-100} ALLOW_CPU=${ALLOW_CPU:-0}
status=0
step() {  # step SECONDS command...
  local limit=$1; shift
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

for problem in mlp-digits cnn-digits; do
  step 100 $PY benchmarks/cost.py --problem "$problem" --steps "$STEPS" --out "$OUT/cost_gpu.json"
  step 100 $PY benchmarks/cost.py --problem "$problem" --steps "$STEPS" --x64 --out "$OUT/cost_gpu.json"
done
step 120 $PY benchmarks/sweep_throughput.py --gpu --lrs "$LRS" --steps "$STEPS" --out "$OUT/sweep_throughput_gpu.json"
step 45 $PY benchmarks/sweep_throughput.py --batching-only --lrs "$LRS" --out "$OUT/sweep_throughput_gpu.json"
step 90 $PY benchmarks/cost.py --problem mlp-digits --steps "$CENTRAL_STEPS" --central-steps "$CENTRAL_STEPS" \
  --flows rod --out "$OUT/cost_central_gpu.json"
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
exit $status
