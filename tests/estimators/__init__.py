"""Tests of the classical estimators, the estimator base and the consistency wrapper."""
