"""Assert no test distribution occurs in train (rule check_splits_disjoint)."""

from mibench.meta import check_disjoint
from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads) as log:
    report = check_disjoint(snakemake.input.train, snakemake.params.tests, snakemake.output[0])
    log.info("%s", report)
