# Can the generator draw a shape when there is only one? Stage I of configs/shapes.yaml trained on a
# square-only folder (6,000 images, its own captions), from the repository root, one core per run.
. .venv/bin/activate
python docs/single_shape/make_data.py square runs/single/square
run() {  # name overrides...
  name=$1; shift
  OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml \
    text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 'text.train_group_by=[]' \
    train.mixed_precision=bf16 train.stages=[1] train.max_steps=1500 train.seed=1 \
    data.name=folder data.path=runs/single/square data.format=txt "$@" --output-dir runs/single/$name
  python docs/single_shape/read_shapes.py runs/single/$name runs/single/square
}
run preset & run no_matching_loss train.clip_weight=0 & wait
run batch_norm_d model.d_norm=batch & wait
run preset train.max_steps=4000 --resume latest & run wide_g model.gf=64 & wait
# Further runs. model.g1_depth and train.d_translate need `git apply docs/single_shape/g1_depth_and_translate.patch`.
run preset_seed2 train.seed=2 & run g1depth1 model.g1_depth=1 & wait
run betas0 train.beta1=0.0 train.beta2=0.9 & run lr4e4 train.lr_g=4e-4 train.lr_d=4e-4 & wait
run decay500 train.lr_decay_every=500 & run res64 model.res1=64 model.res2=128 & wait
run batch128 train.batch_size=128 & run no_mbstd model.d1_minibatch=none & wait
run clip1 train.clip_weight=1.0
run translate125 train.d_translate=0.125 && run translate125 train.d_translate=0.125 train.max_steps=4000 --resume latest
# stage II on the frozen seed-2 stage I, read at 64 px (the third argument of read_shapes.py is the stage)
OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml \
  text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 'text.train_group_by=[]' \
  train.mixed_precision=bf16 'train.stages=[2]' train.stage2_steps=1000 train.seed=1 \
  data.name=folder data.path=runs/single/square data.format=txt \
  --init-from runs/single/preset_seed2/pipeline --freeze-stage1 --output-dir runs/single/stage2
python docs/single_shape/read_shapes.py runs/single/stage2 runs/single/square 2
# the preset continued 2,000 steps at a time, read after each
for s in 2000 4000 6000 8000 10000; do
  r=""; [ $s -gt 2000 ] && r="--resume latest"
  OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml \
    text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 'text.train_group_by=[]' \
    train.mixed_precision=bf16 train.stages=[1] train.max_steps=$s train.seed=1 \
    data.name=folder data.path=runs/single/square data.format=txt $r --output-dir runs/single/curve
  python docs/single_shape/read_shapes.py runs/single/curve runs/single/square
done
python docs/single_shape/blur_reads.py runs/single/square
# Session of 2026-12-04: the preset without the learning-rate decay, read every 2,000 steps
for s in 2000 4000 6000 8000 10000; do
  r=""; [ $s -gt 2000 ] && r="--resume latest"
  OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml \
    text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 'text.train_group_by=[]' \
    train.mixed_precision=bf16 train.stages=[1] train.max_steps=$s train.seed=1 train.lr_decay_every=0 \
    data.name=folder data.path=runs/single/square data.format=txt $r --output-dir runs/single/constlr
  python docs/single_shape/read_shapes.py runs/single/constlr runs/single/square
done
# and at 1,500 steps; WRAP runs train.py and read_shapes.py with a patched generator (convt.py, pixelshuffle.py)
runx() {  # name wrapper overrides...
  name=$1; wrap=$2; shift 2
  OMP_NUM_THREADS=1 python $wrap train.py --config configs/shapes.yaml \
    text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 'text.train_group_by=[]' \
    train.mixed_precision=bf16 train.stages=[1] train.max_steps=1500 train.seed=1 \
    data.name=folder data.path=runs/single/square data.format=txt "$@" --output-dir runs/single/$name
  python $wrap docs/single_shape/read_shapes.py runs/single/$name runs/single/square
}
runx lrd8e4 "" train.lr_d=8e-4 & runx convt docs/single_shape/convt.py & wait
runx convt_seed2 docs/single_shape/convt.py train.seed=2 & runx pshuf docs/single_shape/pixelshuffle.py & wait
runx r1g1 "" train.r1_gamma=1.0 & runx bce "" train.loss=bce & wait
python docs/bn_stats/recalibrate.py runs/single/preset/pipeline runs/single/preset_recal --data runs/single/square --batches 100
mkdir -p runs/single/preset_recal_run && ln -sfn ../preset_recal runs/single/preset_recal_run/pipeline
python docs/single_shape/read_shapes.py runs/single/preset_recal_run runs/single/square
python docs/bn_stats/recalibrate.py stackgan/assets/default runs/bn/v4_recal --batches 100
stackgan eval --model runs/bn/v4_recal --out runs/bn/v4_recal_eval; stackgan eval --model default --out runs/bn/v4_eval
# Session of 2026-12-04 (later): constant rates, the stage I discriminator reading its images
# enlarged x2, or twice as wide; read at 1,500 steps
run up2 train.lr_decay_every=0 model.d1_upsample=2 & run df64 train.lr_decay_every=0 model.df=64 & wait
