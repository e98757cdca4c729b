# The auxiliary classifier on all five attributes, and on shape and background, two at a time on one core each.
bash docs/d_aux/stage1_variant.sh auxall 'model.d_aux=[shape,colour,size,position,background]' &
bash docs/d_aux/stage1_variant.sh auxbg 'model.d_aux=[shape,background]' &
wait
