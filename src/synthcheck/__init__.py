"""SynthCheck: tell AI-generated images from real photographs, show why, and say how sure."""

__version__ = "0.2.0"

__all__ = ["Detector", "Prediction", "__version__"]


def __getattr__(name):  # lazy, so `synthcheck --help` does not import torch
    if name in ("Detector", "Prediction"):
        from . import detector

        return getattr(detector, name)
    raise AttributeError(name)
