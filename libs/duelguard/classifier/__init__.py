"""The guardrail classifier: 12-way multi-label scores per text, two kinds behind one interface.

sentence.py (SentenceGuard, the default: a frozen multilingual sentence encoder + a gated head;
word windows), model.py (GuardClassifier: a token model, decoder or encoder, with a 12-way head;
`GuardClassifier.load` opens either kind), network.py (pooling, freezing), losses.py (ZLPR, BCE),
thresholds.py (calibration under an FPR ceiling), inference.py (message flattening, token windows,
batching: shared with serving), data.py (the training mix), train.py (the train_classifier stage),
onnx_export.py and runtime.py (ONNX / INT8 runtimes), predict.py (reading `duelguard predict` inputs).
Heavy libraries (torch, transformers) are imported inside functions, so importing this package is cheap.
"""
