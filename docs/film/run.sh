# The FiLM measurements of README ("Why shape lags"), from the repository root, 2 CPU cores.
# Every run: configs/shapes.yaml, the bundled text encoder, bf16 autocast; pairs side by side on
# one core each. Seed 0 of the 1,500-step pair ran with a patch of the same maths before
# model.g1_film existed (scratch1500_s0_*.md).
. .venv/bin/activate
mkdir -p runs/film
te="text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 train.mixed_precision=bf16"

# 1. Stage I from scratch, with and without FiLM: 1,500 steps (seed 1; seed 0 above) and 4,000 steps (seeds 0 and 1).
for steps_seed in 1500:1 4000:0 4000:1; do
  steps=${steps_seed%%:*}; seed=${steps_seed##*:}
  for film in false true; do
    OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml $te train.stages=[1] train.max_steps=$steps \
      train.seed=$seed model.g1_film=$film --output-dir runs/film/scratch${steps}_s${seed}_$film &
  done
  wait
done
for run in runs/film/scratch*; do
  stackgan eval --model $run/pipeline --stage 1 --metrics faithfulness,diversity --out $run/eval
done

# 2. The bundled model (v4) trained on for 1,500 stage I steps with a new discriminator, FiLM layers
#    added at zero or not (seeds 0 and 1); v4's stage II.
for seed in 0 1; do
  for film in false true; do
    OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml --init-from default --output-dir runs/film/v4_s${seed}_$film \
      train.stages=[1] train.max_steps=1500 train.lr_g=1e-4 train.lr_d=1e-4 train.lr_decay_every=0 \
      train.mixed_precision=bf16 train.seed=$seed model.g1_film=$film &
  done
  wait
done

# 3. v4's stage II trained on for 800 steps (stage I frozen), FiLM layers added at zero or not.
for film in false true; do
  python train.py --config configs/shapes.yaml --init-from default --freeze-stage1 --output-dir runs/film/v4s2_$film \
    train.stages=[2] train.stage2_steps=800 train.lr_g=1e-4 train.lr_d=1e-4 train.lr_decay_every=0 \
    train.mixed_precision=bf16 train.clip_weight=0.3 model.g2_film=$film
done
for run in runs/film/v4*; do stackgan eval --model $run/pipeline --out $run/eval; done
