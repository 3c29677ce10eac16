"""Serving the classifier with Triton Inference Server.

triton_repository (the complete model
repository: config.pbtxt from params, labels, ONNX, tokenizer, and triton_model.py, the Python-backend
model copied into it), export (the `export` pipeline stage and the champion reference), server
(start/stop the tritonserver binary shipped in the nvidia-pytriton wheel, load a new version),
release (`duelguard serve`: serve the champion, switching versions without a gap), container (the
serving image's entrypoint), client (gRPC client behind `duelguard classify`). The ONNX export the
repository holds is the classifier's own (duelguard.classifier.onnx_export).
Heavy libraries are imported inside functions, so importing this package is cheap.
"""
