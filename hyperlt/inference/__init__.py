"""Serving a trained model: the predictor (features, logits for P preferences, probabilities, classes) and
its fixed-shape batching. Depends on the work dir and model layers, never on training."""
