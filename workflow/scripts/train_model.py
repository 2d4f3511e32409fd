"""Train one model of config.models (rule train_model); resumes from train-state/ if a previous job died."""

from pathlib import Path

from mibench.workflow import rule_context

with rule_context(snakemake.log[0], snakemake.threads, gpus=getattr(snakemake.resources, "gpu", 0)) as log:
    from mibench.learned.trainer import train_from_config  # needs torch: a missing `learned` extra is logged

    out_root = Path(snakemake.output.weights).parent.parent
    result = train_from_config(snakemake.params.runtime["config"], snakemake.wildcards.model, out_root, progress=False)
    if result.status != "complete":
        raise RuntimeError(f"training stopped ({result.status}) at step {result.step}; run again to resume")
    log.info("trained %s: %s", snakemake.wildcards.model, result.metrics)
