"""Training: ratings as index arrays, the models, their objectives and training loop, warm start,
the learning-rate finder and data-parallel training."""
