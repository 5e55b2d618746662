"""SynthCheck: tell AI-generated images from real photographs, show why, and say how sure.

The public API is importable from the top, lazily (so `synthcheck --help` does not import torch):

    from synthcheck import Detector, Prediction

The house: seven layers, each a subpackage. A module imports from its own layer or from lower ones, never from
a higher one, not even inside a function (tests/test_layout.py parses every import and checks this order):

Layers (lowest first): data, models, inference, analysis, training, serving, cli

- data       files -> decoded, labelled uint8 arrays: decode and fit (preprocess), everyday damage (transforms),
             augmentation, folders and tar archives, source groups, the decode cache (store), splits, aligned pairs
             and the autoencoders that make them
- models     the networks (registry), model directories on disk (checkpoint), the models shipped in the package
- inference  a model directory -> verdicts: batched scoring, calibration, metadata evidence, the ONNX backend,
             explanations, the attribution head, `Prediction` and `Detector`
- analysis   measuring: metrics, evaluation, leave-sources-out figures, robustness, the data audit, model cards
- training   fitting: the recipe, the training loop (and torchrun), cross-validation, comparisons, the attribution
             head's fit
- serving    front ends over a Detector: the REST API and its service, the web page, Ray batch scoring
- cli        the `synthcheck` command, one module per command group

`_version` sits below every layer; this file is the facade above them all.
"""

from ._version import __version__

__all__ = ["Detector", "Prediction", "__version__"]


def __getattr__(name):  # lazy, so `synthcheck --help` does not import torch
    if name in ("Detector", "Prediction"):
        from .inference import detector

        return getattr(detector, name)
    raise AttributeError(name)
