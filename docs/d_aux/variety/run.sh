# The auxiliary classifier on all five attributes with a cure for its lost variety, two at a time on one core each:
# the TAC-GAN twin classifier, and the variety term over unnamed attributes.
bash docs/d_aux/stage1_variant.sh tac5 'model.d_aux=[shape,colour,size,position,background]' model.d_aux_twin=true &
bash docs/d_aux/stage1_variant.sh spread5 'model.d_aux=[shape,colour,size,position,background]' train.aux_spread=1 &
wait
