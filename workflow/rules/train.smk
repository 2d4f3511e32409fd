# Training learned estimators (MIST / MIST-QR): one job per entry of config.models.
# GPU jobs: resources gpu=1 (the SLURM executor plugin turns it into --gpus=1); device: auto falls back to
# CPU where there is no CUDA, device: cpu requests no GPU. An interrupted job leaves
# results/models/{model}/train-state/ behind and the next run of the rule resumes from it (docs/learned.md).
from mibench.learn.config import model_specs

MODELS = model_specs(config)
# every trained model (rule all; estimators name a model's weights as their `checkpoint`)
MODEL_OUTPUTS = [f"results/models/{name}/model.{ext}" for name in MODELS for ext in ("safetensors", "json")]


rule train_model:
    input:
        # shards only for data.source: shards; generated-on-the-fly training needs none
        lambda wc: [path for split in MODELS[wc.model].data.shard_splits() for path in shard_files(split)],
    output:
        weights="results/models/{model}/model.safetensors",
        config="results/models/{model}/model.json",
    log:
        "results/logs/train/{model}.log",
    params:
        # a changed model entry or a changed plan of the splits it learns from retrains (rerun trigger `params`)
        model=lambda wc: config["models"][wc.model],
        splits=lambda wc: {
            split: config.get("meta", {}).get("splits", {}).get(split)
            for split in (MODELS[wc.model].data.train_split, MODELS[wc.model].data.validation_split)
            if split
        },
    wildcard_constraints:
        model=r"[A-Za-z][A-Za-z0-9_]*",
    threads: lambda wc: MODELS[wc.model].threads
    resources:
        gpu=lambda wc: 1 if MODELS[wc.model].wants_gpu else 0,
        mem_mb=lambda wc: MODELS[wc.model].mem_mb,
        runtime=lambda wc: MODELS[wc.model].runtime,
    conda:
        "../envs/gpu.yaml"
    script:
        "../scripts/train_model.py"
