"""A LoRA job under ZeRO-3 saves its adapter without gathering the model: at every checkpoint and at the end, the
adapter's own parameters are gathered, the frozen model stays partitioned (issue 21), and the files are peft's, which
export merges and DeepSpeed's own consolidation of the checkpoint (``zero_to_fp32``) agrees with.

The run is real: the trainer under torchrun with two CPU ranks (gloo), as a job runs it. A ``sitecustomize`` in every
process of the run records each DeepSpeed gather (``deepspeed.zero.GatheredParameters``, what DeepSpeed's own
consolidation and transformers' save of a peft model use, one module at a time) entered while a ``save_model`` runs:
how many elements of frozen and of trainable parameters it fetched from the other ranks. The recorder calls DeepSpeed
through; it changes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.trainer_jobs import TINY, WorkDir, run_cli, write_job

from prefops_trainer.adapters import unpickling

TWO_RANKS = {"gpusPerNode": 0, "processesPerNode": 2}
SPEC = {
    "resources": TWO_RANKS,
    "training": {"maxSteps": 4, "checkpointEverySteps": 2, "perDeviceBatchSize": 4, "deepspeed": {"stage": 3}},
}
#: Records, in the rank's file under ``$PREFOPS_TEST_GATHERS``, what each gather entered during a save fetches.
RECORDER = """import importlib.abc
import importlib.machinery
import json
import os
import sys

TARGET = "deepspeed.runtime.zero.partition_parameters"


def _saving():
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "save_model":
            return True
        frame = frame.f_back
    return False


def _record(module, params):
    absent = [p for p in params if p.ds_status == module.ZeroParamStatus.NOT_AVAILABLE]
    line = {"frozen": sum(p.ds_numel for p in absent if not p.requires_grad),
            "trainable": sum(p.ds_numel for p in absent if p.requires_grad), "params": len(params)}
    path = os.path.join(os.environ["PREFOPS_TEST_GATHERS"], "rank-" + os.environ.get("RANK", "none") + ".jsonl")
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\\n")


def _patch(module):
    class Recorded(module.GatheredParameters):
        def __enter__(self):
            if self.enabled and _saving():
                _record(module, self.params)
            return super().__enter__()

    module.GatheredParameters = Recorded


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
"""


@dataclass(frozen=True)
class Run(WorkDir):
    out: Path
    gathers: Path

    def gathered(self, rank: int) -> list[dict[str, int]]:
        """What each gather entered during a save on ``rank`` fetched."""
        lines = (self.gathers / f"rank-{rank}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def recorded(root: Path) -> dict[str, str]:
    """The environment that puts :data:`RECORDER` into every process of a run, recording under ``root/gathers``."""
    (root / "recorder").mkdir(exist_ok=True)
    (root / "recorder" / "sitecustomize.py").write_text(RECORDER)
    (root / "gathers").mkdir(exist_ok=True)
    path = os.pathsep.join(p for p in (str(root / "recorder"), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "PREFOPS_TEST_GATHERS": str(root / "gathers")}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """A LoRA job under ZeRO-3 on two CPU ranks, 4 steps, a checkpoint every 2, exported; its saves' gathers
    recorded."""
    root = tmp_path_factory.mktemp("lora-zero3")
    result = run_cli("run", write_job(root, "t", **SPEC), env=recorded(root))
    assert result.returncode == 0, result.stderr[-3000:]
    return Run(root / "work", root / "out", root / "gathers")


def zero_to_fp32(checkpoint: Path) -> dict[str, torch.Tensor]:
    """DeepSpeed's own consolidation of ``checkpoint``'s trainable parameters, under the names peft saves them."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with unpickling.weights_only():  # DeepSpeed's loader, on the weights-only unpickler
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), exclude_frozen_parameters=True)
    return {name.replace(".default.", "."): t for name, t in state.items()}


def assert_equal_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    assert max((got[k].float() - expected[k].float()).abs().max().item() for k in got) <= 1e-6


@pytest.mark.distributed
def test_lora_saves_under_zero3_fetch_no_frozen_weight_from_other_ranks(run):
    """Before, transformers' save of a peft model gathered every module of the model in turn at every save, on every
    rank, to keep the adapter's tensors: the whole model crossed the network at each checkpoint."""
    for rank in (0, 1):
        gathers = run.gathered(rank)
        assert len(gathers) == 3, "one gather of the adapter at each save: checkpoints 2 and 4, and the final save"
        assert sum(g["frozen"] for g in gathers) == 0, f"rank {rank} fetched frozen weights at a save: {gathers}"
    config = unpickling.load(run.checkpoint(2) / "global_step2" / "zero_pp_rank_0_mp_rank_00_model_states.pt")[
        "ds_config"
    ]
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is False, "the engine's own flag"


@pytest.mark.distributed
def test_the_saved_adapters_are_deepspeed_s_consolidation_of_the_checkpoints_lora_weights(run):
    """Each checkpoint's adapter, and the final one, hold the LoRA tensors alone, equal to what DeepSpeed's own
    ``zero_to_fp32`` consolidates from the checkpoint's partitions (the final save is the last checkpoint's)."""
    for folder, step in ((run.checkpoint(2), 2), (run.checkpoint(4), 4), (run.trained, 4)):
        saved = load_file(folder / "adapter_model.safetensors")
        assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved), sorted(saved)
        assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4
        assert_equal_tensors(saved, zero_to_fp32(run.checkpoint(step)))
    trained_b = [t for k, t in load_file(run.trained / "adapter_model.safetensors").items() if ".lora_B." in k]
    assert any(t.abs().max() > 0 for t in trained_b), "trained: peft starts every lora_B at zero"


@pytest.mark.distributed
def test_the_export_merges_the_adapter_as_peft_does_and_loads(run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(run.out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(TINY / "model")
    merged = PeftModel.from_pretrained(base, run.trained).merge_and_unload().state_dict()
    assert sorted(exported) == sorted(merged)
    assert max((exported[k] - merged[k]).abs().max().item() for k in merged) <= 1e-5


@pytest.mark.distributed
def test_a_lora_job_resumed_from_a_mid_training_checkpoint_under_zero3_ends_where_the_whole_run_ended(run):
    """Last of the module: it trains the shared run again. Resuming reads DeepSpeed's own states (the adapter's
    fp32 weights and their optimizer state, each rank its partition), not the adapter file: the run resumed from
    checkpoint 2 trains steps 3 and 4 again to the very adapter of the run that never stopped, and its saves still
    fetch no frozen weight."""
    import shutil

    whole = load_file(run.trained / "adapter_model.safetensors")
    shutil.rmtree(run.checkpoint(4))  # as if preempted after checkpoint 2
    for f in run.gathers.iterdir():
        f.unlink()
    job = run.work.parent / "t.yaml"
    result = run_cli("train", job, env=recorded(run.work.parent))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint-2" in result.stderr
    report = json.loads(next(run.work.rglob("attempts/0/phases/train.json")).read_text())
    assert report["resumedFrom"] == "checkpoint-2" and report["steps"] == 4
    assert [h["step"] for h in report["logHistory"]] == [1, 2, 3, 4], "the steps before the checkpoint, then 3, 4"
    assert_equal_tensors(load_file(run.trained / "adapter_model.safetensors"), whole)
    for rank in (0, 1):
        assert [g["frozen"] for g in run.gathered(rank)] == [0, 0], "checkpoint 4 and the final save"
