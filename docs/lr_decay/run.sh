# Stage I of configs/shapes.yaml on the full shapes data with and without the learning-rate decay
# (the preset halves both rates every 3,000 steps), seed 1, one core per run side by side, then
# both continued to 8,000 steps; stackgan eval of stage I after 4,000 and 8,000 steps (the tables here).
. .venv/bin/activate
te="text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 train.mixed_precision=bf16"
for to in 4000 8000; do
  r=""; [ $to -gt 4000 ] && r="--resume latest"
  for d in 3000 0; do
    OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml $te train.stages=[1] train.max_steps=$to \
      train.seed=1 train.lr_decay_every=$d $r --output-dir runs/full/s1_decay$d &
  done
  wait
  for d in 3000 0; do
    stackgan eval --model runs/full/s1_decay$d/pipeline --stage 1 --metrics faithfulness,diversity,probe_fid \
      --out runs/full/s1_decay$d/eval_$to
  done
done
# Seed 2, straight to 8,000 steps (seed2_*.md)
for d in 3000 0; do
  OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml $te train.stages=[1] train.max_steps=8000 \
    train.seed=2 train.lr_decay_every=$d --output-dir runs/full/s2_decay$d &
done
wait
for d in 3000 0; do
  stackgan eval --model runs/full/s2_decay$d/pipeline --stage 1 --metrics faithfulness,diversity,probe_fid \
    --out runs/full/s2_decay$d/eval_8000
done
