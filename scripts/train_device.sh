#!/usr/bin/env bash
# Train DS-MAR and its three ablations on one GPU, concurrently (the network is small: one process
# alone leaves the card mostly idle). Usage: scripts/train_device.sh BUDGET_S [VARIANTS...]
# Needs the training pack at .dsmar-train/pack.npz (carried) and PYTHONPATH=. (no install).
# Copies weights and the log to $OUT every 10 s, so a run cut short still returns weights.
set -u
BUDGET=${1:-300}; shift || true
VARIANTS=${*:-full no-attention no-refinement no-jacobian}
OUT=${OUT:-/tmp/dsmar-out}; RUNS=/tmp/dsmar-runs
rm -rf "$RUNS"; mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader
${PYTHON:-python3} -c "import torch, numpy, scipy, PIL; print('torch', torch.__version__, torch.cuda.is_available())"

collect() {
  for v in $VARIANTS; do
    name=$([ "$v" = full ] && echo dsmar || echo "abl-$v")
    [ -f "$RUNS/$v/$name.pt" ] && cp "$RUNS/$v/$name.pt" "$OUT/$name.pt.part" && mv "$OUT/$name.pt.part" "$OUT/$name.pt"
  done
  cat "$RUNS"/*/*.log > "$OUT/train.log" 2>/dev/null
}

pids=()
for v in $VARIANTS; do
  name=$([ "$v" = full ] && echo dsmar || echo "abl-$v")
  ${PYTHON:-python3} -m models.training --config "${CONFIG:-configs/train_gpu.json}" --variant "$v" --name "$name" \
    --out "$RUNS/$v" --budget-s "$BUDGET" --no-resume ${BATCH:+--batch $BATCH} > "$RUNS/$v.stdout" 2>&1 &
  pids+=($!)
done
alive() { for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
while alive; do
  sleep 10; collect
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  tail -qn1 "$RUNS"/*.stdout
done
wait
collect
[ -f "$RUNS/full/dsmar.pt" ] && ${PYTHON:-python3} -m models.training.throughput "$RUNS/full/dsmar.pt" | tee "$OUT/throughput.json"
tail -n 4 "$RUNS"/*.stdout
ls -la "$OUT"
