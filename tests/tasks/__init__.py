"""Tests of task families and transforms."""
