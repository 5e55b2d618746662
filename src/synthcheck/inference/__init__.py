"""Layer 3, inference: a model directory -> verdicts. Batched scoring, calibration, metadata evidence, the ONNX
backend, explanations, the attribution head, `Prediction` and `Detector`. Imports only `data` and `models`."""
