. .venv/bin/activate  # from the repository root
mkdir -p runs
common="--config configs/shapes.yaml text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 train.stages=[1] train.max_steps=1500 train.snapshot_every=750 train.checkpoint_every=500 train.mixed_precision=bf16"
OMP_NUM_THREADS=1 FILM=0 python docs/film_scratch/film.py train $common --output-dir runs/film_base > runs/film_base.log 2>&1 &
OMP_NUM_THREADS=1 FILM=1 python docs/film_scratch/film.py train $common --output-dir runs/film_film > runs/film_film.log 2>&1 &
wait
for v in base film; do
  FILM=$([ $v = film ] && echo 1 || echo 0) python docs/film_scratch/film.py eval --model runs/film_$v/pipeline --stage 1 --metrics faithfulness,diversity --out runs/film_$v/eval > runs/film_$v.eval.log 2>&1
done
echo DONE
