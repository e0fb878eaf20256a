"""DeepSpeed ZeRO-2 and ZeRO-3 on two CPU processes (gloo), launched by the trainer through torchrun."""

import hashlib
import json
import os

import pytest
from support.trainer_jobs import TINY, run_cli

from prefops_trainer.core.spec import DeepSpeedSpec
from prefops_trainer.core.trlconfig import deepspeed_config


def test_deepspeed_config_is_generated_from_the_spec():
    z2 = deepspeed_config(DeepSpeedSpec(stage=2))
    z3 = deepspeed_config(DeepSpeedSpec(stage=3, offload="cpu"))
    assert z2["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in z2["zero_optimization"]
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is False
    assert z3["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert z2["bf16"] == {"enabled": "auto"}, "bf16 follows the model dtype: on for bfloat16 GPUs"
    assert z2["train_micro_batch_size_per_gpu"] == "auto"


@pytest.mark.distributed
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_two_cpu_ranks_train_and_export(tmp_path, tmp_job, stage):
    job = tmp_job(
        resources={"gpusPerNode": 0, "processesPerNode": 2},
        training={
            "maxSteps": 4,
            "perDeviceBatchSize": 4,
            "checkpointEverySteps": 2,
            "deepspeed": {"stage": stage},
        },
    )
    result = run_cli("run", job)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting 2 processes on this node" in result.stderr
    assert "[rank 1]" in result.stderr, "a second rank really ran"
    report = json.loads(next((tmp_path / "work").rglob("phases/train.json")).read_text())
    assert report["worldSize"] == 2 and report["steps"] == 4
    assert report["verifiedRows"] == 8, "the cache was spot-checked against the model, partitioned or not"
    ckpt = next((tmp_path / "work").rglob("checkpoint-4"))
    assert list(ckpt.glob("global_step4/*zero_pp_rank_1*")), "each rank saved its ZeRO partition"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.num_parameters() > 0


@pytest.mark.parametrize("lora", [{"r": 4, "alpha": 8, "dropout": 0.0}, None], ids=["lora", "full"])
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_in_one_process_is_a_distributed_job_of_size_one(tmp_path, tmp_job, stage, lora):
    """No torchrun environment of its own: without one DeepSpeed looked for MPI and died (``No module named
    'mpi4py'``)."""
    job = tmp_job(model={"lora": lora}, training={"maxSteps": 2, "deepspeed": {"stage": stage}})
    result = run_cli("run", job)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting 1 process on this node" in result.stderr
    report = json.loads(next((tmp_path / "work").rglob("phases/train.json")).read_text())
    assert report["worldSize"] == 1 and report["steps"] == 2
    assert (tmp_path / "out" / "prefops.json").exists(), "exported"


@pytest.mark.distributed
@pytest.mark.parametrize("deepspeed", [None, {"stage": 3}], ids=["ddp", "zero3"])
def test_a_stale_cache_caught_by_the_spot_check_in_a_rank_exits_2_with_its_message(tmp_path, tmp_job, deepspeed):
    training = {"maxSteps": 2, **({"deepspeed": deepspeed} if deepspeed else {})}
    job = tmp_job(resources={"gpusPerNode": 0, "processesPerNode": 2}, training=training)
    assert run_cli("precompute", job).returncode == 0
    cache = next((tmp_path / "work" / "refcache").glob("*/shard-*.parquet"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(cache)
    shifted = table.set_column(
        1,
        "ref_chosen_logps",
        pa.array([v - 5 for v in table.column(1).to_pylist()], pa.float32()),
    )
    pq.write_table(shifted, cache)
    manifest = cache.with_name("manifest.json")  # a consistent cache of other numbers: checksums that match
    doc = json.loads(manifest.read_text())
    doc["shards"][0]["sha256"] = hashlib.sha256(cache.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(doc))
    result = run_cli("train", job)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "does not match the model" in result.stderr.splitlines()[-1]


@pytest.mark.distributed
def test_under_torchrun_the_launcher_reports_the_final_evaluation_rank_0_left(tmp_path, tmp_job):
    job = tmp_job(
        dataset={"source": str(TINY / "prefs-split"), "evalSplit": "test", "maxSamples": 32},
        resources={"gpusPerNode": 0, "processesPerNode": 2},
        training={"maxSteps": 2, "perDeviceBatchSize": 4, "checkpointEverySteps": 2, "deepspeed": {"stage": 2}},
    )
    assert run_cli("precompute", job).returncode == 0
    term = tmp_path / "termination-log"
    term.write_text("")
    result = run_cli("train", job, env={"PREFOPS_TERMINATION_LOG": str(term)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(next((tmp_path / "work").rglob("phases/train.json")).read_text())
    assert report["worldSize"] == 2 and report["evaluation"]["step"] == 2
    evaluation = {"step": 2, "metrics": report["evaluation"]["metrics"]}
    assert json.loads(term.read_text()) == {"evaluation": evaluation, "prefixSharing": report["prefixSharing"]}
    assert report["prefixSharing"] == "on"


@pytest.mark.parametrize("rank", [True, False], ids=["a-rank", "one-process"])
@pytest.mark.parametrize(
    ("job_spec", "code"), [({}, 0), ({"algorithm": {"name": "dpo", "beta": 0}}, 2)], ids=["done", "user-error"]
)
def test_the_program_ends_with_its_phase_s_exit_code_whatever_the_interpreter_s_teardown_would_do(
    tmp_job, job_spec, code, rank
):
    """A native thread that libraries leave running can abort the interpreter's teardown (SIGABRT, exit -6 after a
    phase that had finished: a rank's gloo threads, once a single-process precompute). Here the teardown aborts for
    sure: the program, a rank under torchrun or not, skips it, its output flushed."""
    import subprocess
    import sys

    job = tmp_job(**job_spec)
    aborting = "import atexit, os; atexit.register(os.abort); from prefops_trainer.cli import main; main()"
    ranked = {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2"} if rank else {}
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    env = {**env, **ranked, "PREFOPS_METRICS_PORT": "off"}
    result = subprocess.run([sys.executable, "-c", aborting, "validate", str(job)], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == code, result.stderr[-3000:]
    if code == 0:
        assert result.stdout.startswith("apiVersion: prefops.dev/v1alpha1"), "what it printed was flushed"
    else:
        assert "spec.algorithm.beta: must be > 0" in result.stderr.splitlines()[-1], "its log was flushed"
