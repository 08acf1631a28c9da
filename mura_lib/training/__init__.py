"""Training: losses, learning-rate schedule and early stopping, the epoch loop, progress."""
