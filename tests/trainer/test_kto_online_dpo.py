"""KTO (unpaired, reference log-probs precomputed like TRL's) and Online DPO (generations judged by a reward
model) through prefops."""

import json
import math

import pytest
import torch
from support.trainer_jobs import TINY, error_of, job_doc, run_cli

from prefops_trainer.core.errors import DataError, SpecError
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import export as export_phase
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases import train as train_phase

ONLINE = {"rewardModel": {"source": str(TINY / "reward-model")}, "generation": {"maxNewTokens": 8}}


def unpaired_file(tmp_path, n=24):
    rows = [json.loads(line) for line in (TINY / "prefs.jsonl").read_text().splitlines()[:n]]
    out = tmp_path / "unpaired.jsonl"
    with out.open("w") as f:
        for i, r in enumerate(rows):
            label = i % 3 != 0
            f.write(json.dumps({"prompt": r["prompt"], "completion": r["chosen"] if label else r["rejected"],
                                "label": label}) + "\n")  # fmt: skip
    return out


@pytest.mark.parametrize("data", ["paired", "unpaired"])
def test_kto_reference_logps_equal_trl_precompute(tmp_path, data):
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer

    source = TINY / "prefs.jsonl" if data == "paired" else unpaired_file(tmp_path)
    job = parse_job(job_doc(tmp_path, algorithm={"name": "kto"}, dataset={"source": str(source), "maxSamples": 24},
                            training={"perDeviceBatchSize": 4}))  # fmt: skip
    inputs = load_inputs(job)
    assert precompute_phase.run(inputs)["cacheHit"] is False
    table = inputs.ref_cache("train").load()
    rows = inputs.splits["train"].rows
    assert len(rows) == (48 if data == "paired" else 24), "paired rows become two unpaired rows each"

    model = AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32)
    args = KTOConfig(output_dir=str(tmp_path / "trl"), precompute_ref_log_probs=True, max_length=64,
                     per_device_train_batch_size=4, report_to=[], bf16=False, gradient_checkpointing=False,
                     use_cpu=True)  # fmt: skip
    trl_rows = KTOTrainer(model=model, args=args, train_dataset=rows, processing_class=inputs.tokenizer).train_dataset
    ours = torch.tensor([[table[i][0], table[i][1]] for i in trl_rows["index"]])
    theirs = torch.tensor([trl_rows["ref_logps"], trl_rows["ref_KL_logps"]]).T
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert (ours[:, 0] - ours[:, 1]).abs().max() > 0.1, "the KL completions really are other rows' completions"


def test_kto_trains_from_the_cache_and_exports(tmp_path):
    job = parse_job(job_doc(tmp_path, algorithm={"name": "kto", "desirableWeight": 1.0, "undesirableWeight": 1.5},
                            training={"maxSteps": 3, "perDeviceBatchSize": 4}))  # fmt: skip
    inputs = load_inputs(job)
    precompute_phase.run(inputs)
    report = train_phase.run(inputs)
    assert report["steps"] == 3 and report["verifiedRows"] == 8
    assert all(math.isfinite(h["loss"]) and "kl" in h for h in report["logHistory"])
    assert export_phase.run(inputs)["model"]["loraMerged"] is True


def test_kto_second_job_with_the_same_batching_hits_the_cache_another_batch_size_misses(tmp_path):
    base = {"algorithm": {"name": "kto"}, "training": {"perDeviceBatchSize": 4}}
    assert precompute_phase.run(load_inputs(parse_job(job_doc(tmp_path, "a", **base))))["cacheHit"] is False
    sweep = {**base, "algorithm": {"name": "kto", "beta": 0.5}}
    assert precompute_phase.run(load_inputs(parse_job(job_doc(tmp_path, "b", **sweep))))["cacheHit"] is True
    other = {**base, "training": {"perDeviceBatchSize": 8}}
    assert precompute_phase.run(load_inputs(parse_job(job_doc(tmp_path, "c", **other))))["cacheHit"] is False


def test_unpaired_rows_need_boolean_labels_of_both_kinds(tmp_path):
    from prefops_trainer.adapters.data import load_split
    from prefops_trainer.core.spec import DatasetSpec

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "p", "completion": " a", "label": true}\n{"prompt": "q", "completion": " b", "label": "yes"}\n'
    )
    with pytest.raises(DataError, match=r"bad\.jsonl: row 1: label must be true or false, got 'yes'"):
        load_split(DatasetSpec(source=str(bad)), kind="unpaired")
    one = tmp_path / "one.jsonl"
    one.write_text('{"prompt": "p", "completion": " a", "label": true}\n')
    with pytest.raises(DataError, match="KTO needs desirable and undesirable examples"):
        load_split(DatasetSpec(source=str(one)), kind="unpaired")


def test_online_dpo_trains_with_a_reward_model_and_exports(tmp_path):
    job = parse_job(job_doc(tmp_path, algorithm={"name": "online-dpo"}, training={"maxSteps": 3, "perDeviceBatchSize": 4},
                            **ONLINE))  # fmt: skip
    assert job.spec.precompute is False
    inputs = load_inputs(job)
    assert inputs.splits["train"].rows.column_names == ["prompt", "index"], "only prompts are read"
    report = train_phase.run(inputs)
    assert report["steps"] == 3
    for h in report["logHistory"]:
        assert math.isfinite(h["loss"])
        assert {"objective/kl", "objective/scores", "completion_length"} <= set(h)
        assert 1 <= h["completion_length"] <= 8
    export_phase.run(inputs)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").num_parameters() > 0


def test_online_dpo_with_full_fine_tuning_under_zero3_is_refused_at_validation_naming_the_fields(tmp_path, tmp_job):
    """TRL cannot copy the reference model out of ZeRO-3's partitioned weights: the job failed after the model loaded
    and was retried; it is the user's choice to change, so exit 2 before anything loads."""
    job = tmp_job(algorithm={"name": "online-dpo"}, model={"lora": None},
                  training={"maxSteps": 2, "deepspeed": {"stage": 3}}, **ONLINE)  # fmt: skip
    error = error_of(run_cli("run", job))
    assert "spec.training.deepspeed.stage: 3 is not supported with spec.algorithm.name 'online-dpo'" in error
    assert "(no spec.model.lora)" in error and "use stage 2, or LoRA" in error
    assert not (tmp_path / "work").exists(), "refused before any phase ran"


@pytest.mark.distributed
def test_online_dpo_under_deepspeed_zero2_on_two_cpu_ranks(tmp_path, tmp_job):
    job = tmp_job(algorithm={"name": "online-dpo"}, resources={"gpusPerNode": 0, "processesPerNode": 2},
                  training={"maxSteps": 2, "perDeviceBatchSize": 2, "deepspeed": {"stage": 2}}, **ONLINE)  # fmt: skip
    result = run_cli("run", job)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(next((tmp_path / "work").rglob("phases/train.json")).read_text())
    assert report["worldSize"] == 2 and report["steps"] == 2
    assert all(math.isfinite(h["loss"]) for h in report["logHistory"])
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").num_parameters() > 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"algorithm": {"name": "online-dpo"}}, r"spec\.rewardModel: algorithm 'online-dpo' needs a reward model"),
        ({"algorithm": {"name": "online-dpo"}, "reference": {"precompute": True}, **ONLINE},
         r"spec\.reference\.precompute: algorithm 'online-dpo' generates its responses during training"),
        ({"algorithm": {"name": "dpo"}, **ONLINE}, r"spec\.rewardModel: only algorithm 'online-dpo' uses it, not 'dpo'"),
        ({"algorithm": {"name": "kto", "lossType": ["sigmoid"]}}, r"lossType: 'sigmoid' not valid for algorithm 'kto'; valid: kto, apo_zero_unpaired"),
        ({"algorithm": {"name": "kto"}, "dataset": {"truncationMode": "keep_end"}}, r"spec\.dataset\.truncationMode: algorithm 'kto' supports only keep_start"),
    ],
)  # fmt: skip
def test_online_dpo_and_kto_spec_errors_name_the_field(tmp_path, spec, message):
    with pytest.raises(SpecError, match=message):
        parse_job(job_doc(tmp_path, **spec))


def test_kto_and_online_dpo_loss_registries_match_trl():
    from trl import KTOConfig
    from trl.experimental.online_dpo import OnlineDPOConfig

    from prefops_trainer.core.algorithms import ALGORITHMS

    assert set(ALGORITHMS["kto"].loss_types) == set(KTOConfig.__dataclass_fields__["loss_type"].metadata["choices"])
    online = OnlineDPOConfig.__dataclass_fields__["loss_type"].metadata["choices"]
    assert set(ALGORITHMS["online-dpo"].loss_types) == set(online)


def reward_model_with_its_own_code(tmp_path):
    """The tiny reward model, its config naming a module in the folder that leaves a mark when it is imported."""
    import shutil

    folder, mark = tmp_path / "reward-model-with-code", tmp_path / "reward-code-ran"
    shutil.copytree(TINY / "reward-model", folder)
    (folder / "custom_reward.py").write_text(
        "from pathlib import Path\n"
        "from transformers import LlamaForSequenceClassification\n"
        f"Path({str(mark)!r}).write_text('the reward model repository ran its own code')\n"
        "class CustomRewardModel(LlamaForSequenceClassification):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "custom_reward.CustomRewardModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, mark


def test_trusting_the_policys_code_never_runs_the_reward_models_code(tmp_path):
    from prefops_trainer.phases.train.trainers import load_reward_model

    folder, mark = reward_model_with_its_own_code(tmp_path)
    online = {"algorithm": {"name": "online-dpo"}, "generation": {"maxNewTokens": 8}}
    job = parse_job(job_doc(tmp_path, model={"trustRemoteCode": True}, rewardModel={"source": str(folder)}, **online))
    assert job.spec.reward_model.trust_remote_code is False
    model, _ = load_reward_model(load_inputs(job))
    assert not mark.exists(), "the policy's trustRemoteCode let the reward model's code run"
    assert type(model).__name__ == "LlamaForSequenceClassification", "the library's own class, not the folder's"

    trusted = parse_job(job_doc(tmp_path, rewardModel={"source": str(folder), "trustRemoteCode": True}, **online))
    model, _ = load_reward_model(load_inputs(trusted))
    assert mark.exists() and type(model).__name__ == "CustomRewardModel", "its own trustRemoteCode lets it run"
