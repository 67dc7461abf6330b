#!/usr/bin/env bash
# Train DS-MAR on one GPU, and beside it four short runs for the ablation table (full, without
# cross-attention, without refinement, without the Jacobian term; same short budget each, so they
# compare with one another). The network is small: concurrent processes keep the card busy, and the
# main run has the card to itself once the short ones are done.
# Usage: scripts/train_device.sh MAIN_BUDGET_S [ABLATION_BUDGET_S]   (0 skips the ablations)
# Needs the training pack at .dsmar-train/pack.npz (carried) and PYTHONPATH=. (no install).
# Copies weights and the log to $OUT every 10 s, so a run cut short still returns weights.
set -u
MAIN=${1:-300}; ABL=${2:-0}
OUT=${OUT:-/tmp/dsmar-out}; RUNS=/tmp/dsmar-runs; PY=${PYTHON:-python3}
rm -rf "$RUNS"; mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader
$PY -c "import torch, numpy, scipy, PIL, matplotlib; print('torch', torch.__version__, torch.cuda.is_available())"

RUNLIST="full:dsmar:$MAIN"
if [ "$ABL" != 0 ]; then
  B=${ABL_BATCH:-16}  # half batch: the ablation runs leave most of the card to the main run
  RUNLIST="$RUNLIST full:abl-full:$ABL:$B no-attention:abl-no-attention:$ABL:$B no-refinement:abl-no-refinement:$ABL:$B no-jacobian:abl-no-jacobian:$ABL:$B"
fi

collect() {
  for spec in $RUNLIST; do
    IFS=: read -r variant name budget <<< "$spec"
    f="$RUNS/$name/$name.pt"
    [ -f "$f" ] && cp "$f" "$OUT/$name.pt.part" && mv "$OUT/$name.pt.part" "$OUT/$name.pt"
    # The sidecar after the weights (it holds their checksum, the inherited "inference" and the GPU speed).
    [ -f "${f%.pt}.json" ] && cp "${f%.pt}.json" "$OUT/$name.json"
    # The run's report (models/training/report.py): its stages, loss curve and held-out crops.
    [ -f "$RUNS/$name/report.md" ] && mkdir -p "$OUT/$name-report" \
      && for part in report.md curve.png held_out.png; do
        [ -f "$RUNS/$name/$part" ] && cp "$RUNS/$name/$part" "$OUT/$name-report/.$part.part" \
          && mv "$OUT/$name-report/.$part.part" "$OUT/$name-report/$part"
      done
  done
  cat "$RUNS"/*/*.log > "$OUT/train.log" 2>/dev/null
}

pids=()
for spec in $RUNLIST; do
  IFS=: read -r variant name budget batch <<< "$spec"
  $PY -m models.training --config "${CONFIG:-configs/train_gpu.json}" --variant "$variant" --name "$name" \
    --out "$RUNS/$name" --budget-s "$budget" --no-resume ${batch:+--batch $batch} > "$RUNS/$name.stdout" 2>&1 &
  pids+=($!)
done
alive() { for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
while alive; do
  sleep 10; collect
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  tail -qn1 "$RUNS"/*.stdout
done
wait
# The whole method's speed on this GPU, into the main run's sidecar as well, before the last copy to $OUT.
[ -f "$RUNS/dsmar/dsmar.pt" ] && $PY -m models.training.throughput "$RUNS/dsmar/dsmar.pt" --record | tee "$OUT/throughput.json"
collect
tail -n 3 "$RUNS"/*.stdout
ls -la "$OUT"
