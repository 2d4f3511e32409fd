"""Tests of MIST/MIST-QR: model, checkpoints, training, benchmarks."""
