"""The guardrail classifier: 12-way multi-label scores per text, two kinds behind one interface.

Read from the bottom up (each module imports only modules above it in this list):
units.py (what parts of a text are scored, and score_texts: the one scoring loop of every kind and
runtime; deobfuscate.py folds the text first), inference.py (chat flattening, token windows,
batching), runtime.py (ONNX Runtime: sessions and the stand-ins for a torch network),
onnx_export.py (ONNX export, verification, the cached export of `predict --runtime onnx`),
saved.py (the saved-model record: duelguard.json, "is this a classifier directory?", which kind,
SavedClassifier: the interface both kinds share), model.py (GuardClassifier: the token kind, a
decoder or encoder with a 12-way head; network.py: pooling, freezing), sentence.py (SentenceGuard,
the default kind: a frozen multilingual sentence encoder + a gated head), loader.py (load_classifier:
opens either kind), predict.py (reading `duelguard predict` inputs), and for training losses.py
(ZLPR, BCE), thresholds.py (calibration under an FPR ceiling), data.py (the training mix), train.py
(the train_classifier stage). Heavy libraries (torch, transformers) are imported inside functions,
so importing this package is cheap.
"""
