"""What the notebooks narrate: their tables and figures, on top of the library's core.

eda                 numbers that describe a MURA tree (notebook 01)
eda_figures         the figures of notebook 01
training_figures    learning curves and validation scores (notebook 02)
evaluation_figures  ROC and PR curves, confusion, calibration, per-part chart (notebook 03)
error_analysis      the most confident errors, misses by kind on the synthetic sample (03)
cam_figures         a study's views beside their class activation maps (03)
figures             saving a figure

This package is the only one that imports matplotlib or seaborn: the core (data, models,
inference, training, evaluation) never does, so a command-line run never loads plotting code.
Modules are imported by name (``from mura_lib.reports import eda_figures``).
"""
