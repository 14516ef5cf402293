"""SayAnything core library: models, preprocessing, sampling and training. Never imports ComfyUI."""

__version__ = "0.1.0"
