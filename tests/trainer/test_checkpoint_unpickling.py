"""Checkpoint files are unpickled by torch's weights-only unpickler and the allowlist of ``adapters/unpickling.py``
alone (issue 18, item 4), and real checkpoints still resume through it.

The checkpoints are real: the trainer under torchrun with two CPU ranks (ZeRO-2 with LoRA, ZeRO-3 full), and one
process without DeepSpeed, as a job writes them. The ZeRO-2 one is written with Enum members pickled by name,
``getattr(ZeroStageEnum, '...')``, as the trainer image's Python (Debian bookworm's 3.11.2) pickles them; the tests'
Python pickles them by value. The first weights-only loader (ac78dbc) refused the by-name form: every resume in the
image failed with exit 2.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.trainer_jobs import WorkDir, run_cli, write_job

from prefops_trainer.adapters import unpickling

TWO_RANKS = {"gpusPerNode": 0, "processesPerNode": 2}
TRAINING = {"maxSteps": 4, "checkpointEverySteps": 2, "perDeviceBatchSize": 4}
#: kind: (spec, Enum members pickled by name)
KINDS = {
    "zero2-lora": ({"resources": TWO_RANKS, "training": {**TRAINING, "deepspeed": {"stage": 2}}}, True),
    "zero3-full": (
        {"model": {"lora": None}, "resources": TWO_RANKS, "training": {**TRAINING, "deepspeed": {"stage": 3}}},
        False,
    ),
    "plain-lora": ({"training": TRAINING}, False),
}
#: A ``sitecustomize`` that makes every process of a run (torchrun's ranks too) pickle Enum members by name, with the
#: very ``__reduce_ex__`` of Python 3.11.2's enum.py.
BY_NAME = """import enum


def __reduce_ex__(self, proto):
    return getattr, (self.__class__, self._name_)


enum.Enum.__reduce_ex__ = __reduce_ex__
"""


@dataclass(frozen=True)
class Produced(WorkDir):
    job: Path

    def files(self, step: int = 2) -> list[Path]:
        return unpickling.loaded_files(self.checkpoint(step))


def produce(root: Path, spec: dict, by_name: bool) -> Produced:
    """Precompute and train ``spec`` (4 steps, a checkpoint every 2) under ``root``."""
    env = {}
    if by_name:
        (root / "by-name").mkdir()
        (root / "by-name" / "sitecustomize.py").write_text(BY_NAME)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "by-name"), os.environ.get("PYTHONPATH")) if p)
    job = write_job(root, "t", **spec)
    for phase in ("precompute", "train"):
        result = run_cli(phase, job, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    return Produced(root / "work", job)


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> dict[str, Produced]:
    """One real run of each of :data:`KINDS`, shared by the module's tests."""
    return {kind: produce(tmp_path_factory.mktemp(kind), *KINDS[kind]) for kind in KINDS}


def globals_in(path: Path) -> set[str]:
    """The GLOBALs of ``path``'s pickle outside torch's own weights-only allowlist."""
    import torch

    return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))


def allowlisted() -> set[str]:
    """What :func:`unpickling.safe_globals` lets a pickle name, as torch's weights-only unpickler names it."""
    return {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in unpickling.safe_globals()}


@pytest.mark.distributed
def test_every_global_in_real_checkpoints_is_allowlisted_and_both_pickles_of_an_enum_are_there(produced):
    found = {kind: {f.name: globals_in(f) for f in p.files()} for kind, p in produced.items()}
    for kind, files in found.items():
        for name, names in files.items():
            assert names <= allowlisted(), f"{kind} {name} holds {sorted(names - allowlisted())}, not allowlisted"
    optim = "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    assert unpickling.GETATTR in found["zero2-lora"][optim], "the image's pickle of ZeroStageEnum: by name"
    assert unpickling.GETATTR not in found["zero3-full"][optim], "the tests' Python's: by value"
    assert "deepspeed.runtime.zero.config.ZeroStageEnum" in found["zero3-full"][optim]


@pytest.mark.distributed
def test_every_file_of_real_checkpoints_loads_weights_only_and_every_allowlisted_type_is_needed(produced, monkeypatch):
    counts = {kind: len(p.files()) for kind, p in produced.items()}
    assert counts == {"zero2-lora": 6, "zero3-full": 7, "plain-lora": 3}, "states, two rng states, scheduler.pt"
    files = [f for p in produced.values() for f in p.files()]
    states = [unpickling.load(f) for f in files]
    zero = [s for f, s in zip(files, states, strict=True) if f.name.endswith("optim_states.pt")]
    assert {type(s["optimizer_state_dict"]["zero_stage"]).__name__ for s in zero} == {"ZeroStageEnum"}
    full = unpickling.ALLOWED
    for row in full:
        if row[1] == "DynamicLossScaler":
            continue  # float16 training alone stores it (GPUs only): the next test
        monkeypatch.setattr(unpickling, "ALLOWED", tuple(r for r in full if r != row))
        assert [f for f in files if not loads(f)], f"{row[:2]} is allowlisted but no real checkpoint needs it"
    monkeypatch.setattr(unpickling, "ALLOWED", full)


def loads(path: Path) -> bool:
    try:
        unpickling.load(path)
    except pickle.UnpicklingError:
        return False
    return True


def test_the_float16_loss_scaler_deepspeed_stores_loads_and_is_allowlisted_for_that_alone(tmp_path, monkeypatch):
    """What ZeRO stores as its loss scaler under float16 (our config's ``"fp16": {"enabled": "auto"}`` on a GPU), built
    as DeepSpeed builds it: CPU runs cannot train in float16."""
    import torch
    from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler
    from deepspeed.runtime.precision_config import get_float16_config

    args = get_float16_config({"fp16": {"enabled": True}}).dynamic_loss_scale_args()
    scaler = CreateLossScaler(dtype=torch.half, static_loss_scale=0, dynamic_scaling=True, dynamic_loss_args=args)
    saved = tmp_path / "optim_states.pt"
    torch.save({"optimizer_state_dict": {"loss_scaler": scaler}}, saved)
    loaded = unpickling.load(saved)["optimizer_state_dict"]["loss_scaler"]
    assert (type(loaded).__name__, loaded.cur_scale) == ("DynamicLossScaler", scaler.cur_scale)
    monkeypatch.setattr(unpickling, "ALLOWED", tuple(r for r in unpickling.ALLOWED if r[1] != "DynamicLossScaler"))
    assert not loads(saved)


class Calls:
    """A pickle of ``getattr(owner, name)``, as an Enum member pickled by name is, for any owner and name."""

    def __init__(self, owner: object, name: object) -> None:
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


def test_getattr_in_a_checkpoint_names_members_of_allowlisted_enums_and_nothing_else(tmp_path):
    import torch
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    def saved(owner: object, name: object) -> Path:
        path = tmp_path / "states.pt"
        torch.save({"zero_stage": Calls(owner, name)}, path)
        return path

    assert unpickling.load(saved(ZeroStageEnum, "gradients"))["zero_stage"] is ZeroStageEnum.gradients
    for owner, name, why in [
        (ZeroStageEnum, "__class__", "getattr\\(ZeroStageEnum, '__class__'\\): not a member of ZeroStageEnum"),
        (ZeroStageEnum, "_missing_", "not a member of ZeroStageEnum"),
        (LossScaler, "__init__", "getattr of <class '.*LossScaler'>: only members of \\['ZeroStageEnum'\\]"),
        (torch.Tensor, "__reduce_ex__", "getattr of <class 'torch.Tensor'>: only members of"),
    ]:
        with pytest.raises(pickle.UnpicklingError, match=why):
            unpickling.load(saved(owner, name))


@pytest.mark.distributed
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_real_checkpoint_resumes_through_the_weights_only_loader_from_its_step(produced, kind):
    """A kill while checkpoint-4 was saved (its marker never written): the rerun resumes from checkpoint-2."""
    run = produced[kind]
    (run.checkpoint(4) / "prefops-complete.json").unlink()
    result = run_cli("train", run.job)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint-2" in result.stderr
    report = json.loads(next(run.work.rglob("phases/train.json")).read_text())
    assert report["resumedFrom"] == "checkpoint-2"
    assert re.findall(r"\bstep (\d+)/4 loss=", result.stderr) == ["3", "4"], "the steps after checkpoint-2 alone"
    assert [h["step"] for h in report["logHistory"]] == [1, 2, 3, 4], "the history resumed with the checkpoint"


@pytest.mark.distributed
def test_deepspeed_s_own_checkpoint_engine_loads_only_weights_within_the_trainer_s_boundary(produced, tmp_path):
    """DeepSpeed calls ``torch.load(weights_only=False)``; inside :func:`unpickling.weights_only` (around
    ``trainer.train()``) that call gets the weights-only unpickler: real ZeRO states load, a payload does not."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    files = [f for kind in ("zero2-lora", "zero3-full") for f in produced[kind].files() if "global_step" in str(f)]
    assert len(files) == 3 + 4, "ZeRO-2: one model state, two optimizer partitions; ZeRO-3: two of each"
    forged = tmp_path / "forged.pt"
    mark = tmp_path / "unpickled"
    forged.write_bytes(pickle.dumps(Unpickled(mark)))
    engine = TorchCheckpointEngine()
    with unpickling.weights_only():
        loaded = [engine.load(str(f), map_location="cpu") for f in files]
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            engine.load(str(forged), map_location="cpu")
    assert all("ds_version" in sd for sd in loaded)
    assert not mark.exists()
    with pytest.raises(RuntimeError, match="Invalid magic number"):  # what the payload built is no checkpoint
        engine.load(str(forged), map_location="cpu")  # outside the boundary, DeepSpeed's own call unpickles anything
    assert mark.exists(), "the test's forged file is one DeepSpeed would unpickle"


class Unpickled:
    """What an attacker's pickle does when it is loaded: here, leave a mark."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self):
        return Path.write_text, (self.mark, "a checkpoint file from storage was unpickled")
