# Meta-dataset generation: one job per shard, so shards generate in parallel (locally or on SLURM).


rule generate_shard:
    output:
        "results/meta/{split}/shard-{shard}.parquet",
    log:
        "results/logs/generate/{split}/shard-{shard}.log",
    wildcard_constraints:
        shard=r"\d{4}",
    params:
        split_config=lambda wc: config["meta"]["splits"][wc.split],
        shard_size=(config.get("meta") or {}).get("shard_size", 500),
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
