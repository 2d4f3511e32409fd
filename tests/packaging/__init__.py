"""Tests of extras, installs and conda environments."""
