# Meta-dataset generation: one job per shard, so shards generate in parallel (locally or on SLURM).
# params.job: the split's resolved plan, the shard, the generator's code fingerprint (mibench.jobs).


rule generate_shard:
    output:
        layout.SHARD,
    log:
        "results/logs/generate/{split}/shard-{shard}.log",
    wildcard_constraints:
        shard=r"\d{4}",
    params:
        job=lambda wc: JOBS.shard(wc.split, int(wc.shard)),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/generate_shard.py"


rule check_splits_disjoint:
    input:
        train=lambda wc: shard_files("train"),
        tests=lambda wc: [path for split in TEST_SPLITS for path in shard_files(split)],
    output:
        "results/meta/splits-disjoint.json",
    log:
        "results/logs/generate/splits-disjoint.log",
    params:
        tests={split: shard_files(split) for split in TEST_SPLITS},
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/check_splits.py"
