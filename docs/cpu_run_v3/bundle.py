"""Make the bundled model folder from a trained pipeline folder: the model id and its history set,
the sampling it is served with declared (4 candidates per sample, diversity 0.5: what `stackgan
generate`, `stackgan eval` and the app use unless told otherwise), the generator weights stored as
float16 (they load as float32), the text encoder copied as it is.

    python docs/cpu_run_v3/bundle.py runs/shapes/pipeline stackgan/assets/default stackgan-shapes-v5 "HISTORY LINE" ...
"""
import json
import shutil
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from stackgan.pipeline import StackGANPipeline

SAMPLING = {"candidates": 4, "diversity": 0.5}


def main(src: Path, dst: Path, model_id: str, history: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pipeline"
        shutil.copytree(src, out)
        (out / "training_config.yaml").unlink(missing_ok=True)  # the same config is in model_index.json
        for part in ("stage1", "stage2"):
            f = out / part / "model.safetensors"
            state = load_file(str(f))
            save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(f))
        index = json.loads((out / "model_index.json").read_text(encoding="utf-8"))
        index["info"]["model_id"] = model_id
        index["info"]["history"] = history
        index["info"]["sampling"] = SAMPLING
        (out / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        StackGANPipeline.from_pretrained(out)  # loads, text encoder identity checked
        for part in ("stage1", "stage2", "model_index.json"):
            target = dst / part
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(out / part), str(target))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:])
