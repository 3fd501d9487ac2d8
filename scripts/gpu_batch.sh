#!/usr/bin/env bash
# The whole GPU batch (tests + benchmarks), one job per GPU in parallel, for a machine lent for a
# few minutes. Each job writes OUT/<job>.log; benchmark results go to OUT/results and are packed
# into OUT/results.tgz. Jobs on different GPUs are independent: every benchmark measures its
# baselines on its own GPU in the same process, so its ratios stand alone.
#   bash scripts/gpu_batch.sh OUT [JOB[@GPU] ...]     (jobs: see the table below; default: all)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
# shellcheck source=/dev/null
source scripts/device_env.sh
out=${1:?usage: gpu_batch.sh OUT [JOB ...]}; shift
mkdir -p "$out/results"
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1 LONGSEQ_BENCH_OUT="$out/results"
PYTEST="python3 -m pytest --tb=short -rfE -p no:cacheprovider --durations=10"  # -rfE: failures are named even in a cut-off log
declare -A JOBS=(
  [flash_tests]="$PYTEST tests/kernels/test_flash_attn.py tests/kernels/test_flash_attn_gpu.py"
  [kernel_tests]="$PYTEST tests/kernels --ignore=tests/kernels/test_flash_attn.py --ignore=tests/kernels/test_flash_attn_gpu.py; $PYTEST tests/core -m gpu"
  [scan_tests]="$PYTEST -v tests/kernels/test_selective_scan.py"
  [attn_tests]="$PYTEST -v --tb=short tests/core/attention/test_attention_gpu.py"
  [core_gpu]="$PYTEST -v --tb=short tests/core -m gpu --ignore=tests/core/attention/test_attention_gpu.py"
  [conv_tests]="$PYTEST -v tests/kernels/test_causal_conv1d.py tests/kernels/test_fftconv.py tests/kernels/test_rmsnorm.py"
  [genomics_results]="python3 scripts/genomics_results.py --contexts 1024 8192 --pretrain-time 00:00:02:00 --finetune-time 00:00:01:15 --workdir /tmp/genomics_runs --out $out/results"
  [forecasting336]="python3 -m benchmarks.forecasting --datasets etth1 --models patchtst dlinear --lookback 336 --num-workers 4 --accelerator gpu --out $out/results --tag etth1-336"
  [ssd_tests]="for w in 0 2 4 8; do python3 scripts/ssd_hopper_check.py \$w; done; $PYTEST -v tests/kernels/test_ssd.py"
  [genomics_context]="python3 scripts/genomics_results.py --contexts 1024 8192 --pretrain-time 00:00:03:20 --skip-finetune --workdir /tmp/genomics_ctx --out $out/results --tag 'context-{slug}'"
  [genomics_cv]="python3 scripts/genomics_results.py --skip-pretrain --skip-finetune --promoter-folds 5 --promoter-epochs 10 --promoter-time 00:00:01:15 --workdir /tmp/genomics_cv --out $out/results --tag 'promoters-cv-{slug}'"
  [forecasting96]="python3 -m benchmarks.forecasting --datasets etth1 --models dlinear patchtst informer --lookback 96 --num-workers 4 --accelerator gpu --out $out/results --tag etth1-96"
  [tokred]="$PYTEST -v tests/kernels/test_token_merge.py -m gpu; python3 -m benchmarks.token_reduction --models vit_b16 vit_l16 --deadline 400 --out $out/results || LONGSEQ_TOME_KERNELS=0 python3 -m benchmarks.token_reduction --models vit_b16 --deadline 200 --out $out/results"
  [sweep_flash]="python3 scripts/kernel_sweep.py flash --out $out/results/sweep_flash.jsonl"
  [sweep_scan]="python3 scripts/kernel_sweep.py scan --out $out/results/sweep_scan.jsonl"
  [sweep_scan_fft]="python3 scripts/kernel_sweep.py scan --out $out/results/sweep_scan.jsonl; python3 scripts/kernel_sweep.py fftconv --out $out/results/sweep_fftconv.jsonl"
  # iEnhancer: 5 seeds from scratch and 5 from the 1K E. coli model, both strands scored (declared headline);
  # both processes share one GPU (small models), with the SSD reference grid beside them.
  [genomics_ienhancer]="python3 scripts/genomics_results.py --contexts 1024 --max-steps 3000 --pretrain-time 00:00:04:00 --finetune-time 00:00:01:15 --finetune-init pretrained --finetune-seeds 0 1 2 3 4 --rc-average --workdir /tmp/g1k --out $out/results --tag 'ctx1k-{slug}' & python3 scripts/genomics_results.py --skip-pretrain --finetune-init scratch --finetune-seeds 0 1 2 3 4 --finetune-time 00:00:01:15 --rc-average --workdir /tmp/gscratch --out $out/results --tag 'scratch-{slug}' & $PYTEST tests/kernels/test_ssd.py -k matches_reference & wait"
  # E. coli at 8K and 32K with the 1K run's step count and tokens per step (same tokens seen), in parallel.
  [genomics_long]="for c in 8192 32768; do python3 scripts/genomics_results.py --contexts \$c --max-steps 3000 --pretrain-time 00:00:08:00 --skip-finetune --workdir /tmp/glong --out $out/results --tag \"ctx\$c-{slug}\" & done; wait"
  [genomics_check]="python3 scripts/genomics_results.py --contexts 1024 --max-steps 1500 --pretrain-time 00:00:04:00 --skip-finetune --workdir /tmp/gcheck --out $out/results --tag 'check-{slug}'"
  [genomics_evalcheck]="python3 scripts/genomics_results.py --contexts 1024 --max-steps 1500 --pretrain-time 00:00:04:00 --skip-finetune --workdir /tmp/gcheck2 --out $out/results --tag 'check2-{slug}' && python3 scripts/genomics_eval_check.py /tmp/gcheck2/pretrain_hyena_dna_tiny_1024/pretrained --workdir /tmp/gcheck2/eval && cp -r /tmp/gcheck2/pretrain_hyena_dna_tiny_1024/pretrained $out/results/check2_pretrained"
  [forecast96]="bash scripts/forecast_shards.sh $out/results/forecast96"
  [genomics_scale]="python3 -m benchmarks.genomics_scale --deadline 450 --out $out/results"
  [bench_mamba]="python3 -m benchmarks.run mamba"
  # Parts of the mamba benchmark on separate GPUs (each its own folder: the files share a name).
  [bench_scan]="LONGSEQ_MAMBA_PARTS=scan python3 -m benchmarks.run mamba --out $out/results/mamba_scan"
  [bench_packing]="LONGSEQ_MAMBA_PARTS=packing python3 -m benchmarks.run mamba --out $out/results/mamba_packing"
  # The fftconv sweep picks the knobs, then the fftconv benchmark runs with them (recorded in its JSON); the block
  # part (250 s on an H100) has its own job, bench_fftconv_blocks, so the two fit one slot each.
  [fftconv_tuned]="python3 scripts/kernel_sweep.py fftconv --out $out/results/sweep_fftconv.jsonl --best-out $out/results/fftconv_knobs.json; LONGSEQ_FFTCONV_KNOBS=$out/results/fftconv_knobs.json LONGSEQ_FFTCONV_PARTS=\${FFTCONV_PARTS:-conv,model} python3 -m benchmarks.run fftconv"
  [fftconv_ncu]="ncu --clock-control none -k regex:'_row_|_col_' -c 9 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis python3 scripts/kernel_sweep.py fftconv_once > $out/results/ncu_fftconv.txt 2>&1; grep -E '^  _|Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Block Size|Grid Size|L1/TEX Hit|L2 Hit|Executed Ipc A' $out/results/ncu_fftconv.txt"
  # E. coli at 1K, 8K and 32K with HyenaDNA's sequence-length warm-up (64 bases, doubled every epoch), same steps and tokens.
  [genomics_warmup]="for c in 1024 8192 32768; do python3 scripts/genomics_results.py --contexts \$c --max-steps 3000 --length-warmup 64 1 --pretrain-time 00:00:06:00 --skip-finetune --workdir /tmp/gwarm --out $out/results --tag \"warmup-ctx\$c-{slug}\" & done; wait"
  # The fftconv knob sweep at 64K and at 1M (where rows of 512 leave one column per column program), one GPU each.
  [sweep_fftconv_64k]="python3 scripts/kernel_sweep.py fftconv --out $out/results/sweep_fftconv-64k.jsonl --best-out $out/results/fftconv_knobs-64k.json"
  [sweep_fftconv_1m]="python3 scripts/kernel_sweep.py fftconv --length 1048576 --out $out/results/sweep_fftconv-1m.jsonl --best-out $out/results/fftconv_knobs-1m.json"
  # The 1M sweep split in two (rows of 512, rows of 2048), for a machine with a GPU to spare for each half.
  [sweep_fftconv_1m_rows512]="python3 scripts/kernel_sweep.py fftconv --length 1048576 --candidates 0,1,3 --out $out/results/sweep_fftconv-1m-rows512.jsonl"
  [sweep_fftconv_1m_rows2048]="python3 scripts/kernel_sweep.py fftconv --length 1048576 --candidates 4,5 --out $out/results/sweep_fftconv-1m-rows2048.jsonl"
  # The fftconv benchmark's conv and model parts at the module's knobs (the block part is bench_fftconv_blocks).
  [bench_fftconv_conv]="LONGSEQ_FFTCONV_PARTS=conv,model LONGSEQ_FFTCONV_DEADLINE=\${FFTCONV_DEADLINE:-400} python3 -m benchmarks.run fftconv --out $out/results/fftconv_conv"
  # Rows of 512 against the long-sequence rows of 2048 on both sides of MIN_COLS's switch (128K stays, 256K switches).
  [sweep_fftconv_rowplan]="for L in 131072 262144; do python3 scripts/kernel_sweep.py fftconv --length \$L --candidates 0,5 --out $out/results/sweep_fftconv-rowplan.jsonl; done"
  [fft_tests]="$PYTEST -n 3 -v --timeout=\${TEST_TIMEOUT:-300} tests/kernels/test_fftconv.py tests/kernels/test_fftconv_dft.py"
  [bench_fftconv_blocks]="LONGSEQ_FFTCONV_PARTS=block LONGSEQ_FFTCONV_DEADLINE=\${FFTCONV_DEADLINE:-280} python3 -m benchmarks.run fftconv --out $out/results/fftconv_blocks"
  [bench_mamba_kernels]="LONGSEQ_MAMBA_PARTS=scan,conv,ssd python3 -m benchmarks.run mamba --out $out/results/mamba_kernels"
  [mamba_conv_models]="LONGSEQ_MAMBA_PARTS=conv,lm,packing python3 -m benchmarks.run mamba --out $out/results/mamba_models"
  [bench_mamba_models]="LONGSEQ_MAMBA_PARTS=lm,packing python3 -m benchmarks.run mamba --out $out/results/mamba_models"
  [bench_attn]="python3 -m benchmarks.run flash_attn attention"
  [bench_flash]="python3 -m benchmarks.run flash_attn"
  [bench_ssm]="python3 -m benchmarks.run mamba fftconv"
)
selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=(flash_tests kernel_tests bench_attn bench_ssm)
ngpu=$(nvidia-smi -L | wc -l)
echo "GPUs: $ngpu; jobs: ${selected[*]}"
i=0
pids=()
for sel in "${selected[@]}"; do
  job=${sel%@*}; gpu=$((i % ngpu))
  [ "$sel" != "$job" ] && gpu=${sel#*@}  # JOB@GPU pins a job to a GPU (jobs on one GPU run in order)
  t_var="JOB_TIMEOUT_$job"; t=${!t_var:-${JOB_TIMEOUT:-560}}  # per-job limit, e.g. JOB_TIMEOUT_bench_flash=300
  # Jobs sharing a GPU run one after another on it: chain them through a per-GPU lock.
  ( flock 9; CUDA_VISIBLE_DEVICES=$gpu timeout "$t" bash -c "${JOBS[$job]}" >"$out/$job.log" 2>&1
    echo "exit $? (gpu $gpu)" >>"$out/$job.log" ) 9>"/tmp/gpu$gpu.lock" &
  pids+=($!)
  i=$((i + 1))
done
wait "${pids[@]}"
for sel in "${selected[@]}"; do job=${sel%@*}; echo "== $job: $(tail -n 3 "$out/$job.log" | tr '\n' ' ')"; done
tar -czf "$out/results.tgz" -C "$out" results && rm -rf "$out/results"
