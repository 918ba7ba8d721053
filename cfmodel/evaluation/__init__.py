"""Evaluation: rating and top-N metrics on held-out ratings, beside the most-popular baseline."""
