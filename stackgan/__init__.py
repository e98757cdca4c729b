"""stackgan: text-to-image StackGAN with minibatch discrimination, conditioned on open_clip."""

from . import env  # noqa: F401  (must run before gradio / huggingface_hub are imported)

__version__ = "0.1.0"


def __getattr__(name):
    if name == "StackGANPipeline":
        from .pipeline import StackGANPipeline

        return StackGANPipeline
    raise AttributeError(name)
