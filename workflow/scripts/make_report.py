"""The self-contained HTML report over every benchmark (rule report)."""

from mibench.evaluate.report import report_from_disk
from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads) as log:
    runtime = snakemake.params.runtime
    log.info("wrote %s", report_from_disk(runtime["config"], output=snakemake.output[0]))
