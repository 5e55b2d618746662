"""Layer 5, training: fitting models (the recipe, the training loop and torchrun, cross-validation, comparisons,
the attribution head's fit). Imports only lower layers."""
