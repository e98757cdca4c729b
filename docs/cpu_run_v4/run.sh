# configs/shapes.yaml's run (docs/cpu_run_v3, stackgan-shapes-v5) continued from its stage I
# checkpoint at 16,000 steps to 24,000, two ways side by side, one core each: the preset as it is
# (variety term 1.5) and the variety term at 2; then stage II (1,000 steps) trained again on each.
# runs/spread15 is that run's folder; the metrics.jsonl copied with it keeps the old stage II records, which the
# plot replaces with the new ones (stackgan.visual.latest_records).
for r in a b; do
  cp -r runs/spread15 runs/v6$r
  rm -rf runs/v6$r/stages/stage2 runs/v6$r/checkpoints/stage2-* runs/v6$r/pipeline runs/v6$r/eval*
done
OMP_NUM_THREADS=1 python train.py --config runs/v6a/config.yaml --output-dir runs/v6a \
  --resume runs/v6a/checkpoints/stage1-step00016000 train.max_steps=24000 train.aux_spread=1.5 &
OMP_NUM_THREADS=1 python train.py --config runs/v6b/config.yaml --output-dir runs/v6b \
  --resume runs/v6b/checkpoints/stage1-step00016000 train.max_steps=24000 train.aux_spread=2 &
wait
M=faithfulness,diversity,probe_fid
for r in a b; do
  stackgan eval --model runs/v6$r/pipeline --candidates 1 --metrics $M --out runs/v6$r/eval
  stackgan eval --model runs/v6$r/pipeline --candidates 4 --diversity 0.5 --metrics $M --out runs/v6$r/eval_c4
  stackgan eval --model runs/v6$r/pipeline --stage 1 --candidates 1 --metrics $M --out runs/v6$r/eval_stage1
done
# The first (variety term 1.5) read better on every column but entropy: it is the bundled model.
python docs/cpu_run_v3/bundle.py runs/v6a/pipeline stackgan/assets/default stackgan-shapes-v6 \
  "configs/shapes.yaml on 2 CPU cores (AMD EPYC, bf16 autocast): stage I 16,000 steps at batch 64 from scratch with the bundled text encoder (text.train_steps=0), the run of stackgan-shapes-v5, 1 h 33 min alone on 2 cores" \
  "stage I continued from its 16,000-step checkpoint to 24,000 steps (preset unchanged, constant learning rates), 1 h 11 min on one core beside a second run; stage II 1,000 steps trained again on it, 13 min" \
  "generator weights stored as float16"
stackgan eval --model default --metrics $M --out docs/eval_default                  # the declared 4 candidates
stackgan eval --model default --candidates 1 --metrics $M --out docs/eval_default/plain
