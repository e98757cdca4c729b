# One stage I variant of configs/shapes.yaml (as its CPU run: 8,000 steps, seed 0) on one core,
# then its stage I evaluation: bash docs/d_aux/stage1_variant.sh NAME OVERRIDE...
set -e
. .venv/bin/activate
name=$1; shift
OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml --output-dir runs/$name \
  text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 'train.stages=[1]' \
  "$@" > runs/$name.out 2>&1
OMP_NUM_THREADS=1 stackgan eval --model runs/$name/pipeline --stage 1 --metrics faithfulness,diversity,probe_fid \
  --out runs/$name/eval_stage1 >> runs/$name.out 2>&1
