# A lower auxiliary-classifier weight, and the mode-seeking term, two at a time on one core each.
bash docs/d_aux/stage1_variant.sh auxw03 train.aux_weight=0.3 &
bash docs/d_aux/stage1_variant.sh ms1 train.mode_seeking=1 &
wait
