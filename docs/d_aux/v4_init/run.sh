# configs/shapes.yaml (d_aux, d1_upsample=2, g2_skip) initialised from the bundled v4's stage I
# (stage II removed, so the skip stage II starts fresh): stage I 4,000 + stage II 1,000 steps.
set -e
. .venv/bin/activate
rm -rf runs/v4s1 && cp -r stackgan/assets/default runs/v4s1 && rm -rf runs/v4s1/stage2
python train.py --config configs/shapes.yaml --init-from runs/v4s1 --output-dir runs/v4aux \
  text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 train.max_steps=4000
stackgan eval --model runs/v4aux/pipeline --stage 1 --metrics faithfulness,diversity,probe_fid --out runs/v4aux/eval_stage1
stackgan eval --model runs/v4aux/pipeline --metrics faithfulness,diversity,probe_fid --out runs/v4aux/eval
echo done
