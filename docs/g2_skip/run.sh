# Stage II only, 1,000 steps, on the frozen stage I of docs/d_aux's up2_aux run at 8,000 steps
# (model.d1_upsample=2, model.d_aux=[shape], seed 1, constant rates; its pipeline folder copied
# to runs/full/up2_aux_pipeline_8000 when that run ended at 8,000 steps). Both with the auxiliary
# shape classifier in stage II's discriminator; one with StackGAN's stage II generator, one with
# model.g2_skip=true. One core per run; stackgan eval of the two-stage pipelines at 64 px.
. .venv/bin/activate
te="text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 train.mixed_precision=bf16"
s2() {  # name overrides...
  name=$1; shift
  OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml $te --init-from runs/full/up2_aux_pipeline_8000 \
    --freeze-stage1 train.stages=[2] train.stage2_steps=1000 train.seed=1 train.lr_decay_every=0 \
    model.d1_upsample=2 'model.d_aux=[shape]' "$@" --output-dir runs/full/$name
  OMP_NUM_THREADS=1 stackgan eval --model runs/full/$name/pipeline --metrics faithfulness,diversity,probe_fid \
    --out runs/full/$name/eval
}
s2 s2on_up2aux_aux model.g2_skip=false &   # stackgan_stage2.md, stackgan_stage2_grid.png
s2 s2on_up2aux_aux_skip model.g2_skip=true &   # skip.md, skip_grid.png
wait
