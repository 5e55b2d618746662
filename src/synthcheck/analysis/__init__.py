"""Layer 4, analysis: measuring models and data (metrics, evaluation, leave-sources-out figures, robustness, the
data audit, model cards). Imports only lower layers."""
