"""Tests of metrics, reports, MLflow logging and UI."""
