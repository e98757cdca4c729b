# Stage II (configs/shapes.yaml: the skip stage II, 1,000 steps) on spread5's frozen stage I, one
# core, then stackgan eval of the two-stage pipeline with plain sampling and with candidates:
# bash docs/d_aux/variety/stage2.sh spread5_s2 runs/spread5/pipeline
set -e
. .venv/bin/activate
te="text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0"
name=$1; init=$2; shift 2
OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml $te --init-from $init --freeze-stage1 'train.stages=[2]' \
  train.stage2_steps=1000 'model.d_aux=[shape,colour,size,position,background]' train.aux_spread=1 "$@" \
  --output-dir runs/$name > runs/$name.out 2>&1
ev() { OMP_NUM_THREADS=1 stackgan eval --model runs/$name/pipeline --metrics faithfulness,diversity,probe_fid "$@" >> runs/$name.out 2>&1; }
ev --out runs/$name/eval
ev --candidates 4 --out runs/$name/eval_c4
ev --candidates 4 --diversity 1 --out runs/$name/eval_c4d1
ev --candidates 8 --out runs/$name/eval_c8
