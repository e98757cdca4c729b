# The auxiliary classifier on all five attributes with a cure for its lost variety, two at a time on one core each:
# the TAC-GAN twin classifier, and the variety term over unnamed attributes.
bash docs/d_aux/stage1_variant.sh tac5 'model.d_aux=[shape,colour,size,position,background]' model.d_aux_twin=true &
bash docs/d_aux/stage1_variant.sh spread5 'model.d_aux=[shape,colour,size,position,background]' train.aux_spread=1 &
wait
# Then, one core each: spread5 continued to 16,000 steps (a copy of its run folder, resumed), and the
# variety term at weight 2 (8,000 steps); the 16,000-step stage I evaluated plain and with 4 candidates.
cp -r runs/spread5 runs/spread5_16k
OMP_NUM_THREADS=1 python train.py --config configs/shapes.yaml --output-dir runs/spread5_16k --resume latest \
  text.model=local-dir:stackgan/assets/default/text_encoder text.train_steps=0 'train.stages=[1]' \
  'model.d_aux=[shape,colour,size,position,background]' train.aux_spread=1 train.max_steps=16000 &
bash docs/d_aux/stage1_variant.sh spread5_w2 'model.d_aux=[shape,colour,size,position,background]' train.aux_spread=2 &
wait
stackgan eval --model runs/spread5_16k/pipeline --stage 1 --metrics faithfulness,diversity,probe_fid --out runs/spread5_16k/eval_stage1
stackgan eval --model runs/spread5_16k/pipeline --stage 1 --candidates 4 --metrics faithfulness,diversity,probe_fid --out runs/spread5_16k/eval_stage1_c4
