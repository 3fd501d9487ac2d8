#!/usr/bin/env bash
# The look-back-96 forecasting table as one process per (dataset, model, horizon), spread over the GPUs
# (many small processes per GPU: these models leave a GPU mostly idle, so the table's wall time is set by
# the slowest single run). Each process writes OUT/forecasting-<dataset>-<model>-<H>.csv; join them with
#   python -m benchmarks.forecasting merge --inputs OUT/forecasting-*.csv --tag NAME --out DIR
#   bash scripts/forecast_shards.sh OUT [DATASET ...]     (default: all four datasets)
set -u
out=${1:?usage: forecast_shards.sh OUT [DATASET ...]}; shift
datasets=("$@"); [ ${#datasets[@]} -eq 0 ] && datasets=(etth1 ettm1 weather exchange_rate)
mkdir -p "$out/logs"
ngpu=$(nvidia-smi -L | wc -l)
i=0
for d in "${datasets[@]}"; do
  for m in patchtst dlinear informer s_mamba; do
    for h in 96 192 336 720; do
      tag="$d-$m-$h"
      CUDA_VISIBLE_DEVICES=$((i % ngpu)) timeout "${FORECAST_TIMEOUT:-480}" python3 -m benchmarks.forecasting --datasets "$d" --models "$m" \
        --horizons "$h" --lookback 96 --num-workers 0 --accelerator gpu --out "$out" --tag "$tag" \
        --workdir "/tmp/forecast/$tag" >"$out/logs/$tag.log" 2>&1 &
      i=$((i + 1))
    done
  done
done
wait
echo "finished: $(ls "$out"/forecasting-*.csv 2>/dev/null | wc -l) of $i runs"
