# Stage I of configs/shapes.yaml on the full shapes data, constant rates (train.lr_decay_every=0),
# with the discriminators' auxiliary shape classifier (model.d_aux=[shape]) and/or the stage I
# discriminator reading its images enlarged x2 (model.d1_upsample=2); one core per run, side by
# side; stackgan eval of stage I at 4,000 and 8,000 steps (the tables here). The control is
# docs/lr_decay's constant-rate run (runs/full/s1_decay0, seed 1; s2_decay0, seed 2).
. .venv/bin/activate
te="text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 train.mixed_precision=bf16"
run() {  # name seed steps overrides...
  name=$1 seed=$2 to=$3; shift 3
  r=""; [ -d runs/full/$name/checkpoints ] && r="--resume latest"
  OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml $te train.stages=[1] train.max_steps=$to \
    train.seed=$seed train.lr_decay_every=0 "$@" $r --output-dir runs/full/$name
  OMP_NUM_THREADS=1 stackgan eval --model runs/full/$name/pipeline --stage 1 --metrics faithfulness,diversity,probe_fid \
    --out runs/full/$name/eval_$to
}
for to in 2000 4000; do
  run aux_shape 1 $to 'model.d_aux=[shape]'
done
for to in 2000 4000; do
  run up2 1 $to model.d1_upsample=2 & run up2_aux 1 $to model.d1_upsample=2 'model.d_aux=[shape]' & wait
done
run up2_aux 1 8000 model.d1_upsample=2 'model.d_aux=[shape]' & run aux_shape 1 8000 'model.d_aux=[shape]' & wait
# Seed 2 (control: docs/lr_decay's seed2_decay0_8000.md)
run s2_aux_shape 2 8000 'model.d_aux=[shape]' &
(run s2_up2_aux 2 4000 model.d1_upsample=2 'model.d_aux=[shape]'; run s2_up2_aux 2 8000 model.d1_upsample=2 'model.d_aux=[shape]') &
wait
# The control continued (constant rates, seed 1) to 12,000 steps: docs/lr_decay/decay0_12000.md
OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml $te train.stages=[1] train.max_steps=12000 \
  train.seed=1 train.lr_decay_every=0 --resume latest --output-dir runs/full/s1_decay0
