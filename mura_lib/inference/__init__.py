"""Inference: running a trained model, the one place that training and evaluation share.

engine     a model's probabilities over a loader (bf16 autocast, channels_last on CUDA), the
           checkpoint's preprocessing, and loading a checkpoint for inference
evaluate   a checkpoint on a split of MURA: predictions.csv and metrics.json
predict    image files and study folders: one JSON-able result per input, optional CAMs

Nothing here imports ``mura_lib.training`` or a plotting library, so evaluating or predicting
never loads the training code or matplotlib.
"""
