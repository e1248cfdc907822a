"""Inference: the model registry and cache, scoring, generation and the text conventions they share."""
