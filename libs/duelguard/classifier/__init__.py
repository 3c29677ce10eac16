"""The guardrail classifier: a decoder LM with a 12-way multi-label head (docs/method.md).

model.py (GuardClassifier: load/save/predict), losses.py (ZLPR, BCE), thresholds.py (per-category
calibration on dev), inference.py (message flattening, chunking, batching: shared with serving),
train.py (the train_classifier stage), predict.py (reading `duelguard predict` inputs).
Heavy libraries (torch, transformers) are imported inside functions, so importing this package is cheap.
"""
