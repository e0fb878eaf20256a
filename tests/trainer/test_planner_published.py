"""Published configurations that fit, or ran out of memory, planned as prefops jobs: the verdict must be the one their
authors saw. Each case names its source; model sizes are the models' own config.json (tests/fixtures/model-configs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefops_trainer.core import planner

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "model-configs"
GIB = 2**30


def plan(name: str, **spec: Any) -> planner.Plan:
    doc: dict[str, Any] = {
        "model": {"source": f"hf://{name.replace('--', '/')}", "dtype": "bfloat16"},
        "dataset": {"source": "hf://trl-lib/ultrafeedback_binarized"},
        "algorithm": {"name": "dpo"},
        "output": {"uri": "s3://models/out"},
        "storage": {"uri": "s3://work/prefops"},
    }
    for key, value in spec.items():
        doc[key] = {**doc.get(key, {}), **value}
    return planner.plan(doc, json.loads((CONFIGS / f"{name}.json").read_text()))


def test_zephyr_7b_beta_full_dpo_on_8_a100_80gb_under_zero3_fits():
    """huggingface/alignment-handbook, recipes/zephyr-7b-beta/dpo/config_full.yaml with
    recipes/accelerate_configs/deepspeed_zero3.yaml (8 processes): full fine-tuning of zephyr-7b-sft-full (Mistral
    7B) in bf16, per-device batch 8, accumulation 2, max_length 1024, gradient checkpointing, a reference model (no
    precomputed log-probs); trained on 8 x A100 80GB (the recipe's README)."""
    result = plan(
        "alignment-handbook--zephyr-7b-sft-full",
        dataset={"maxLength": 1024},
        training={
            "perDeviceBatchSize": 8,
            "gradientAccumulation": 2,
            "gradientCheckpointing": True,
            "deepspeed": {"stage": 3},
        },
        reference={"precompute": False},
        resources={"nodes": 1, "gpusPerNode": 8, "gpuMemory": "80Gi"},
    )
    assert result.fits is True
    train = result.phase("train").device
    assert train is not None and train.components["referenceModel"] > 0


def test_simpo_llama_3_8b_instruct_on_8_h100_80gb_fits():
    """princeton-nlp/SimPO, training_configs/llama-3-8b-instruct-simpo.yaml: full fine-tuning in bf16 with
    flash-attention 2, per-device batch 2, accumulation 16, max_length 2048, gradient checkpointing, DeepSpeed
    ZeRO-3 on 8 x H100 80GB (its README). SimPO materializes the logits (CPO's trainer): they are planned, and fit."""
    result = plan(
        "meta-llama--Meta-Llama-3-8B-Instruct",
        model={"attnImplementation": "flash_attention_2"},
        algorithm={"name": "simpo"},
        dataset={"maxLength": 2048},
        training={
            "perDeviceBatchSize": 2,
            "gradientAccumulation": 16,
            "gradientCheckpointing": True,
            "deepspeed": {"stage": 3},
        },
        resources={"nodes": 1, "gpusPerNode": 8, "gpuMemory": "80Gi"},
    )
    assert result.fits is True
    train = result.phase("train").device
    assert train is not None and train.components["logits"] > 4 * GIB  # 4 rows x 2048 x 128256 vocabulary, bf16


TRL_3168 = {  # TRL's quick-start DPOConfig of early 2025 (TRL 0.16): batch 8, max_length 1024, no checkpointing
    "model": {"dtype": "float32"},  # from_pretrained without torch_dtype: float32
    "dataset": {"maxLength": 1024},
    "training": {"perDeviceBatchSize": 8},
    "resources": {"gpusPerNode": 1, "gpuMemory": "80Gi"},
}


def test_trl_3168_qwen2_5_0_5b_runs_out_of_an_a100_80gb_when_its_fp32_logits_are_materialized():
    """huggingface/trl#3168: DPO of Qwen2.5-0.5B-Instruct, loaded in float32, with the quick-start DPOConfig on one
    A100 80GB ran out of memory at the first step; TRL's maintainers traced it to the full-vocabulary (151,936) fp32
    logits of the concatenated batch. prefops' CPO-family trainers still materialize the logits as TRL 0.16's
    DPOTrainer did: that job does not fit, and the logits are its second-largest component."""
    result = plan("Qwen--Qwen2.5-0.5B-Instruct", algorithm={"name": "cpo"}, **TRL_3168)
    assert result.fits is False
    train = result.phase("train").device
    assert train is not None
    ranked = sorted(train.components, key=lambda k: -train.components[k])
    assert ranked[:2] == ["activations", "logits"]
    assert any(s.fits and "gradientCheckpointing" in s.change for s in result.suggestions)


def test_the_same_dpo_job_fits_with_trl_1_16_s_chunked_lm_head():
    """The same job as DPO on prefops (TRL 1.16's chunked log-prob kernel never holds the [rows, 1024, 151936]
    logits): the head needs under 2 GiB and the job fits 80GB, reference model included."""
    result = plan("Qwen--Qwen2.5-0.5B-Instruct", reference={"precompute": False}, **TRL_3168)
    assert result.fits is True
    train = result.phase("train").device
    assert train is not None and train.components["logits"] < 2 * GIB and train.components["referenceModel"] > 0


def test_llama_2_7b_full_dpo_on_one_a100_40gb_runs_out_of_memory_even_at_batch_1():
    """ZHZisZZ/modpo#5: DPO of Llama-2-7B on one A100 40GB ran out of memory with batch size 1 (full fine-tuning
    with a reference model). Weights, gradients and AdamW states alone exceed 40GB; LoRA or ZeRO-3 offload fit."""
    result = plan(
        "meta-llama--Llama-2-7b-hf",
        dataset={"maxLength": 512},
        training={"perDeviceBatchSize": 1},
        reference={"precompute": False},
        resources={"gpusPerNode": 1, "gpuMemory": "40Gi"},
    )
    assert result.fits is False
    fixes = {s.change.split(":")[0] for s in result.suggestions if s.fits}
    assert {"model.lora", "training.deepspeed"} <= fixes
