"""Tests of the Snakemake workflow: rules, re-runs, SLURM."""
