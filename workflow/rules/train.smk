# Training learned estimators (MIST / MIST-QR): one job per entry of config.models.
# GPU jobs: resources gpu=1 (the SLURM executor plugin turns it into --gpus=1) and the GPU conda env;
# device: auto falls back to CPU where there is no CUDA; device: cpu requests no GPU and uses the CPU env.
# An interrupted job leaves results/models/{model}/train-state/ behind and the next run of the rule resumes
# from it (docs/learned.md).
# params.job: the model spec that changes weights, the split plans it learns from, the training code.


rule train_model:
    input:
        # shards only for data.source: shards; generated-on-the-fly training needs none
        lambda wc: [path for split in MODELS[wc.model].data.shard_splits() for path in shard_files(split)],
    output:
        weights=layout.WEIGHTS,
        config=layout.MODEL_JSON,
    log:
        "results/logs/train/{model}.log",
    params:
        job=lambda wc: JOBS.train(wc.model),
        runtime=lambda wc: JOBS.train_runtime(wc.model),
    wildcard_constraints:
        model=r"[A-Za-z][A-Za-z0-9_]*",
    threads: lambda wc: MODELS[wc.model].threads
    resources:
        gpu=lambda wc: 1 if MODELS[wc.model].wants_gpu else 0,
        mem_mb=lambda wc: MODELS[wc.model].mem_mb,
        runtime=lambda wc: MODELS[wc.model].runtime,
    conda:
        # the env must match the resource: a CPU model (device: cpu) needs no multi-GB CUDA torch
        lambda wc: "../envs/gpu.yaml" if MODELS[wc.model].wants_gpu else "../envs/cpu.yaml"
    script:
        "../scripts/train_model.py"
