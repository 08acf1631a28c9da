"""Training: losses, learning-rate schedule and early stopping, the epoch loop, the recipe.

Validation during training runs through :mod:`mura_lib.inference`, the same code as evaluation.
"""
