#!/usr/bin/env bash
# GPU checks (issues 3 and 5), one script for a GPU machine with JAX (CUDA), diffrax, equinox,
# optax, jaxtyping, tqdm and scikit-learn installed. Writes into $OUT (default benchmarks/results).
#
#   OUT=benchmarks/results bash benchmarks/gpu_check.sh
#
# 1. device description;
# 2. a larger setting than the CPU benchmarks: mlp-digits on all 1797 digits, width 512 (~300k
#    parameters), float32: a 4-lr sweep (EoS onset and tracking at each lr) and one compare run
#    whose metrics give the time per GD step and per unit of Rod Flow time;
# 3. the sweep-throughput check: one compare run vs a 64-lr sweep on mlp-digits.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 JAX_DEFAULT_MATMUL_PRECISION=highest
PY=${PY:-python3}
status=0
step() { echo "== $*"; "$@" || { echo "FAILED: $*"; status=1; }; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu_device.txt" 2>&1 || true
$PY -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$OUT/gpu_device.txt"

step $PY -m rodflow.cli sweep --problem mlp-digits --n 1797 --width 512 --lrs 0.02,0.04,0.08,0.16 \
    --steps 1000 --flows discrete,stable,rod --no-progress --out "$OUT/gpu_mlp_wide_sweep"
step $PY -m rodflow.cli compare --problem mlp-digits --n 1797 --width 512 --lr 0.08 --steps 1000 \
    --flows discrete,stable,rod --no-progress --out "$OUT/gpu_mlp_wide_compare"
step $PY benchmarks/sweep_throughput.py --gpu --lrs 64 --steps 1000 --out "$OUT/sweep_throughput_gpu.json"
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
m = json.loads((out / "gpu_mlp_wide_compare" / "metrics.json").read_text())
steps = m["steps"] + 1
summary = {
    "device": m["device"], "problem": "mlp-digits n=1797 width=512 (float32)", "lr": m["lr"],
    "eos_onset_step": m["eos_onset_step"],
    "ms_per_gd_step": 1e3 * m["flows"]["discrete"]["wall_s"] / steps,
    "ms_per_unit_rod_time": 1e3 * m["flows"]["rod"]["wall_s"] / steps,
    "ms_per_unit_gradient_flow_time": 1e3 * m["flows"]["stable"]["wall_s"] / steps,
    "note": "wall_s includes in-program observation (losses at the rod ends, sharpness every 10 steps)",
    "rel_dist_mean_eos": {k: v.get("rel_dist_mean_eos") for k, v in m["flows"].items() if k != "discrete"},
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PYEOF
rm -f "$OUT"/*/checkpoint.npz "$OUT"/*/series.npz  # keep what is worth committing
exit $status
