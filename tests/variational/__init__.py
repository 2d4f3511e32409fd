"""Tests of the neural variational bounds and their stacked training."""
