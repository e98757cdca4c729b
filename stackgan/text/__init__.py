"""Text encoders: captions -> embeddings `[N, D]`, with open_clip as the engine."""

from .encoder import TextEncoder, TextEncoderError, load_text_encoder, save_text_encoder

__all__ = ["TextEncoder", "TextEncoderError", "load_text_encoder", "save_text_encoder"]
