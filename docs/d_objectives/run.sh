# The discriminator measurements of README ("Why shape lags": what the discriminator learns), from the
# repository root, 2 CPU cores. Every run: configs/shapes.yaml as it was before it turned on
# train.contrastive (FiLM in stage I, matching loss 0.3), the bundled text encoder, bf16 autocast,
# stage I only, 1,500 steps; two runs side by side on one core each.
. .venv/bin/activate
mkdir -p runs/dobj
te="text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 train.mixed_precision=bf16"
run() {  # name seed overrides...
  name=$1; seed=$2; shift 2
  OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml $te train.stages=[1] train.max_steps=1500 \
    train.seed=$seed train.contrastive=0 "$@" --output-dir runs/dobj/$name
}
# Seed 1 (the control is docs/film's "1,500 steps, seed 1, FiLM").
run ttur 1 train.lr_d=4e-4 train.lr_g=1e-4 & run df64 1 model.df=64 & wait
run r1 1 train.r1_gamma=0.1 & run bn 1 model.d_norm=batch & wait
run none_r1 1 model.d_norm=none train.r1_gamma=0.1 & run con1 1 train.contrastive=1 & wait
run con0.3 1 train.contrastive=0.3 & run con2 1 train.contrastive=2 & wait
run con1_hard 1 train.contrastive=1 train.hard_negatives=0.5 & wait
# Seed 0, the control run again with the current code.
run s0_con2 0 train.contrastive=2 & run s0_base 0 & wait
for r in runs/dobj/*; do
  stackgan eval --model $r/pipeline --stage 1 --metrics faithfulness,diversity --out $r/eval
  python -m benchmarks.discriminator_attributes $r --stage 1 --out $r/discriminator
done

# Can the stage I discriminator's image encoder learn shape at all? Supervised shape classification of
# real 32 px images with its layers (df 32) and a linear head, batch 64, Adam (beta1 0.5), one thread.
python docs/d_objectives/shape_classifier.py --norm spectral --lr 2e-4
python docs/d_objectives/shape_classifier.py --norm batch --lr 2e-4
python docs/d_objectives/shape_classifier.py --norm none --lr 2e-4
python docs/d_objectives/shape_classifier.py --norm spectral --lr 1e-3
python docs/d_objectives/shape_classifier.py --norm none --lr 1e-3

# Deeper discriminator encoders (model.d_depth: extra conv3x3 layers at each scale): stage I,
# configs/shapes.yaml as it is now (FiLM, matching loss 0.3, no contrastive loss), seed 1, 1,500
# steps with a control run of the same code, then the control and depth 1 continued to 4,000 steps.
run2() {  # name overrides...
  name=$1; shift
  OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml $te train.stages=[1] train.seed=1 "$@" \
    --output-dir runs/dobj/$name
}
run2 depth1 train.max_steps=1500 model.d_depth=1 & run2 depth2 train.max_steps=1500 model.d_depth=2 & wait
run2 depth0 train.max_steps=1500 & wait
for r in runs/dobj/depth*; do
  stackgan eval --model $r/pipeline --stage 1 --metrics faithfulness,diversity --out $r/eval1500
  python -m benchmarks.discriminator_attributes $r --stage 1 --out $r/discriminator1500
done
run2 depth0 train.max_steps=4000 --resume latest & run2 depth1 train.max_steps=4000 model.d_depth=1 --resume latest & wait
for r in runs/dobj/depth0 runs/dobj/depth1; do
  stackgan eval --model $r/pipeline --stage 1 --metrics faithfulness,diversity --out $r/eval4000
  python -m benchmarks.discriminator_attributes $r --stage 1 --out $r/discriminator4000
done
python docs/d_objectives/shape_classifier.py --norm spectral --lr 2e-4 --depth 1
python docs/d_objectives/shape_classifier.py --norm spectral --lr 2e-4 --depth 2
