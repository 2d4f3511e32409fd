"""Tests of the typed config: checks and the shipped configs."""
