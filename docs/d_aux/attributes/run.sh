# Stage I of configs/shapes.yaml (as its CPU run, 8,000 steps, seed 0) with the auxiliary classifier on more attributes
# (all five; shape and background), two at a time on one core each.
. .venv/bin/activate
run() {
  name=$1; shift
  OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml --output-dir runs/$name \
    text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 'train.stages=[1]' \
    "$@" > runs/$name.out 2>&1
  OMP_NUM_THREADS=1 stackgan eval --model runs/$name/pipeline --stage 1 --metrics faithfulness,diversity,probe_fid \
    --out runs/$name/eval_stage1 >> runs/$name.out 2>&1
}
run auxall "model.d_aux=[shape,colour,size,position,background]" &
run auxbg "model.d_aux=[shape,background]" &
wait
echo done
