"""Runners: training, evaluation, checkpoints and devices."""
