"""The reference pass on every device of a precompute pod (issue 21 item 1): each pod runs one process per device
under torchrun, the rows split over every process of every pod, the model copied to each process or partitioned over
the pod's processes by ZeRO-3; either way the table training reads is a single process's."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.trainer_jobs import ROOT, job_doc, run_cli, write_job

from prefops_trainer import launch
from prefops_trainer.adapters import storage
from prefops_trainer.core import planner
from prefops_trainer.core.refpass import rank_rows, sharding
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases.train.reference import load_reference

ROWS = 26  # pods of 13 pairs, processes of 6 and 7: with a pair per forward, the first process runs out first


@pytest.mark.parametrize(("n_rows", "pods", "ranks"), [(24, 2, 2), (25, 3, 4), (5, 2, 4), (1, 1, 8), (1000, 7, 8)])
def test_the_parts_of_every_process_of_every_pod_are_the_rows_exactly_once(n_rows, pods, ranks):
    parts = [rank_rows(n_rows, pod, pods, r, ranks) for pod in range(pods) for r in range(ranks)]
    assert sorted(i for part in parts for i in part) == list(range(n_rows))
    assert all(p.step == 1 for p in parts), "each part is contiguous"
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 + n_rows // (pods * ranks * 10), "the work is spread evenly"


@pytest.mark.parametrize(
    ("choice", "cuda", "planned", "mode"),
    [
        ("auto", True, "replicated", "replicated"),
        ("auto", True, "zero3", "zero3"),
        ("auto", True, None, "replicated"),
        ("auto", False, "zero3", "replicated"),
        ("zero3", False, "replicated", "zero3"),
        ("replicated", True, "zero3", "replicated"),
    ],
)
def test_the_spec_forces_the_mode_and_auto_takes_the_plan_s_on_gpus(choice, cuda, planned, mode):
    assert sharding(choice, cuda, planned) == mode


def test_a_precompute_pod_starts_one_process_per_gpu_on_its_own_whatever_the_training_rendezvous(tmp_path):
    job = parse_job(job_doc(tmp_path, resources={"gpusPerNode": 8, "nodes": 2}))
    env = {"PREFOPS_NPROC_PER_NODE": "8", "PREFOPS_NNODES": "2", "PREFOPS_NODE_RANK": "1"}
    topo = launch.precompute_topology(job, env)
    assert (topo.nnodes, topo.node_rank, topo.nproc_per_node) == (1, 0, 8)
    cmd = launch.torchrun_command(topo, Path("job.yaml"), job, 60, "precompute", ("--shard", "1", "--num-shards", "3"))
    assert "--nnodes=1" in cmd and "--nproc-per-node=8" in cmd
    assert cmd[-6:] == ["precompute", "job.yaml", "--shard", "1", "--num-shards", "3"]
    local = parse_job(job_doc(tmp_path, resources={"gpusPerNode": 0, "processesPerNode": 2}))
    assert launch.precompute_topology(local, {}).nproc_per_node == 2, "locally: spec.resources.processesPerNode"


LLAMA_8B = json.loads(
    (ROOT / "tests" / "fixtures" / "model-configs" / "meta-llama--Llama-3.1-8B-Instruct.json").read_text()
)


def precompute_plan(sharding_choice: str, memory: str, gpus: int = 8) -> planner.Plan:
    """Llama 3.1 8B in float32 (32 GB of weights), DPO, pods of ``gpus`` GPUs of ``memory``."""
    spec = {
        "algorithm": {"name": "dpo"},
        "model": {"dtype": "float32", "lora": {"r": 16}},
        "reference": {"sharding": sharding_choice},
        "resources": {"gpusPerNode": gpus, "gpuMemory": memory},
    }
    return planner.plan(spec, LLAMA_8B)


def test_auto_partitions_a_reference_model_too_big_for_one_gpu_and_the_precompute_pods_then_fit():
    whole = precompute_plan("replicated", "24Gi")
    parted = precompute_plan("auto", "24Gi")
    assert whole.fits_phase(whole.phase("precompute")) is False, "32 GB of weights on a 24 GiB device"
    assert parted.reference_sharding == "zero3"
    pre = parted.phase("precompute")
    assert parted.fits_phase(pre) is True and pre.processes == 8
    assert pre.device is not None and pre.device.components["weights"] < 32e9 / 8 + 2.2e9, (
        "an eighth of the weights each, and one gathered module (the 2.1 GB LM head) at a time"
    )
    assert precompute_plan("auto", "80Gi").reference_sharding == "replicated", "fits one device: copied whole"
    assert precompute_plan("zero3", "80Gi").reference_sharding == "zero3", "the spec forces it"
    assert precompute_plan("auto", "24Gi", gpus=1).reference_sharding == "replicated", "one GPU: nothing to share"


def stored_rows(cache, num_shards: int) -> list[int]:
    """Every row index the shards on storage hold, shard after shard."""
    out: list[int] = []
    for shard in range(num_shards):
        data = storage.read_bytes(cache.root.join(f"shard-{shard:05d}-of-{num_shards:05d}.parquet"))
        out += pq.read_table(io.BytesIO(data)).column("index").to_pylist()
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference table a single process computes for the whole dataset, one shard."""
    tmp = tmp_path_factory.mktemp("one")
    inputs = load_inputs(parse_job(job_doc(tmp, dataset={"maxSamples": ROWS})))
    precompute_phase.run(inputs, 0, 1)
    return load_reference(inputs)["train"]


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["replicated", "zero3"])
def test_two_pods_of_two_processes_write_the_table_one_process_computes(tmp_path, one_process, mode):
    spec = {
        "dataset": {"maxSamples": ROWS},
        "reference": {"workers": 2, "sharding": mode, "tokensPerBatch": 1},  # a forward per pair
        "resources": {"gpusPerNode": 0, "processesPerNode": 2},
    }
    job = write_job(tmp_path, **spec)
    term = tmp_path / "termination-log"
    for pod in (0, 1):
        term.write_text("")
        result = run_cli("precompute", job, "--shard", str(pod), "--num-shards", "2",
                         env={"PREFOPS_TERMINATION_LOG": str(term)})  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(term.read_text()) == {"cacheHit": False}, "the launcher's word from the pod's first process"
        assert "starting 2 processes on this node" in result.stderr
        part = re.search(rf"\[rank 1\] .*train shard {pod}/2, part 2/2: (\d+) pairs", result.stderr)
        assert part and int(part[1]) == 7, "the pod's second process computed its own part of the rows"
        report = json.loads(next((tmp_path / "work").rglob(f"phases/precompute-{pod:05d}.json")).read_text())
        assert (report["processes"], report["sharding"], report["splits"]["train"]["pairs"]) == (2, mode, ROWS // 2)
        if mode == "zero3":
            held = re.findall(r"\[rank (\d)\] .*ZeRO-3: this process holds (\d+) of .* (\d+) parameters", result.stderr)
            assert sorted(r for r, _, _ in held) == ["0", "1"]
            assert all(int(h) <= int(total) // 2 + 64 for _, h, total in held), "each holds about half the weights"
            assert re.search(r"\[rank 0\] .*ZeRO-3: 1 of 7 forwards on a dummy pair", result.stderr), (
                "the process with fewer pairs kept the other's gathers company"
            )
    inputs = load_inputs(parse_job(job_doc(tmp_path, **spec)))
    assert sorted(stored_rows(inputs.ref_cache("train"), 2)) == list(range(ROWS)), "every row exactly once"
    table = load_reference(inputs)["train"]
    assert len(table) == ROWS
    np.testing.assert_allclose(table.chosen, one_process.chosen, rtol=0, atol=1e-5)
    np.testing.assert_allclose(table.rejected, one_process.rejected, rtol=0, atol=1e-5)
