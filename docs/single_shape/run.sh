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
