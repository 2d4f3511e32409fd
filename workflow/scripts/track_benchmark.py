"""Log one benchmark's evaluated results to MLflow (rule track_benchmark); fails without losing results."""

import json

from mibench.evaluate.mlflow_runs import log_from_disk
from mibench.io import atomic_write_text
from mibench.tracking import tracking_uri
from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads) as log:
    runtime = snakemake.params.runtime
    benchmark = snakemake.wildcards.benchmark
    runs = log_from_disk(runtime["config"], benchmark, provenance=runtime["provenance"])
    atomic_write_text(json.dumps({"tracking_uri": tracking_uri(), "runs": runs}, indent=2) + "\n", snakemake.output[0])
    log.info("logged %d run(s) to %s", len(runs), tracking_uri())
