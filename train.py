"""Train stackgan: `python train.py --config configs/shapes-tiny.yaml --output-dir runs/tiny [key=value ...]`.

Also runs under `accelerate launch train.py ...` or `torchrun --nproc_per_node N train.py ...`.
"""

from stackgan.cli import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
