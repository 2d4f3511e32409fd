"""Tests of meta-dataset plans and shards."""
