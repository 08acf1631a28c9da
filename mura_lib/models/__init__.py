"""Model construction, pretrained weights, checkpoints and class activation maps."""
