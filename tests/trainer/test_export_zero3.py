"""A ZeRO-3 full fine-tune is exported without the model ever gathered in one process (issue 21, item 2): each rank
saves its own partitions, export cuts every tensor from them a block of bytes at a time (adapters/zero3.py), and the
result is DeepSpeed's own consolidation of the final checkpoint (``zero_to_fp32``), loadable with ``from_pretrained``.

The run is real: the trainer under torchrun with two CPU ranks (gloo), as a job runs it. The partition rule the
synthetic cases follow is DeepSpeed's own (``zero3_partitioned_param_info``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from support.trainer_jobs import TINY, WorkDir, error_of, run_cli, write_job

from prefops_trainer.adapters import unpickling, zero3
from prefops_trainer.core import zero3 as layout
from prefops_trainer.core.errors import MergeError
from prefops_trainer.core.spec import DeepSpeedSpec
from prefops_trainer.core.trlconfig import deepspeed_config
from prefops_trainer.core.weights import INDEX_FILE

TWO_RANKS = {"gpusPerNode": 0, "processesPerNode": 2}
SPEC = {
    "model": {"lora": None},
    "resources": TWO_RANKS,
    "training": {"maxSteps": 4, "checkpointEverySteps": 2, "perDeviceBatchSize": 4, "deepspeed": {"stage": 3}},
}


def partition_like_deepspeed(tensors: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], world: int, folder):
    """What :func:`zero3.save` writes for a model of ``tensors`` (parameters) and ``buffers`` on ``world`` ranks:
    each parameter flattened, padded with zeros to ``world`` partitions of DeepSpeed's size, one file per rank."""
    from deepspeed.utils.zero_to_fp32 import zero3_partitioned_param_info

    folder.mkdir(parents=True, exist_ok=True)
    for rank in range(world):
        part = {}
        for name, t in tensors.items():
            size, padding = zero3_partitioned_param_info(t.numel(), world)
            flat = torch.cat([t.reshape(-1), torch.zeros(padding, dtype=t.dtype)])
            part[name] = flat[rank * size : (rank + 1) * size].clone()
        save_file(part | (buffers if rank == 0 else {}), folder / layout.partition_file(rank, world))
    entries = [layout.Entry(n, _dtype(t), tuple(t.shape), True) for n, t in tensors.items()]
    entries += [layout.Entry(n, _dtype(t), tuple(t.shape), False) for n, t in buffers.items()]
    (folder / layout.LAYOUT).write_text(json.dumps(layout.layout_doc(world, entries)))


def _dtype(t: torch.Tensor) -> str:
    return {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}[t.dtype]


def loaded(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model in ``folder`` (its single file, or the shards its index names)."""
    index = folder / INDEX_FILE
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    )
    return {k: v for f in files for k, v in load_file(folder / f).items()}


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_tensors_cut_from_deepspeed_s_partitions_are_the_tensors_bit_for_bit_in_their_dtype(tmp_path, world):
    """Sizes that do not divide by the world (padding on the last rank), a tensor smaller than the world, a scalar
    buffer and bfloat16 beside float32; a small maxShardSize: several shards and an index."""
    g = torch.Generator().manual_seed(world)
    tensors = {
        "embed.weight": torch.randn(37, 11, generator=g),
        "layer.q.weight": torch.randn(13, 7, generator=g).to(torch.bfloat16),
        "layer.norm.weight": torch.randn(3, generator=g),
        "head.weight": torch.randn(41, 11, generator=g),
    }
    buffers = {"layer.counter": torch.tensor(7, dtype=torch.int64)}
    partition_like_deepspeed(tensors, buffers, world, tmp_path / "trained")
    written = zero3.consolidate(tmp_path / "trained", tmp_path / "out", 2_000)
    assert len(written) >= 2 and (tmp_path / "out" / INDEX_FILE).exists()
    got = loaded(tmp_path / "out")
    assert sorted(got) == sorted(tensors | buffers)
    for name, t in (tensors | buffers).items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


def test_a_rank_file_of_another_save_is_refused_naming_it(tmp_path):
    tensors = {"w": torch.randn(10, 3)}
    partition_like_deepspeed(tensors, {}, 2, tmp_path / "trained")
    other = tmp_path / "trained" / layout.partition_file(1, 2)
    save_file({"w": torch.randn(16)}, other)  # a partition of another size: another model or world
    with pytest.raises(MergeError, match=rf"{other}: 'w' is F32 \(16,\), the layout says F32 \(15,\)"):
        zero3.consolidate(tmp_path / "trained", tmp_path / "out", 10**9)


def test_zero3_never_gathers_the_model_on_save_lora_or_not():
    """A full fine-tune saves each rank's partitions, a LoRA job its adapter's parameters alone gathered."""
    for offload in ("none", "cpu"):
        zero = deepspeed_config(DeepSpeedSpec(stage=3, offload=offload))["zero_optimization"]
        assert zero["stage3_gather_16bit_weights_on_model_save"] is False


@dataclass(frozen=True)
class Run(WorkDir):
    job: Path
    out: Path
    stderr: str


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """A ZeRO-3 full fine-tune on two CPU ranks, 4 steps, a checkpoint every 2, exported."""
    root = tmp_path_factory.mktemp("zero3")
    job = write_job(root, "t", **SPEC)
    result = run_cli("run", job)
    assert result.returncode == 0, result.stderr[-3000:]
    return Run(root / "work", job, root / "out", result.stderr)


@pytest.mark.distributed
def test_a_zero3_full_fine_tune_hands_over_each_rank_s_partitions_and_never_a_gathered_model(run):
    trained = sorted(p.name for p in run.trained.iterdir())
    parts = [layout.partition_file(0, 2), layout.partition_file(1, 2)]
    assert set(parts) | {layout.LAYOUT, "config.json"} <= set(trained)
    assert not [n for n in trained if n.startswith("model")], "no gathered model beside the partitions"
    for step in (2, 4):
        saved = {p.name for p in run.checkpoint(step).iterdir()}
        assert f"global_step{step}" in saved and not [n for n in saved if n.startswith("model")], saved
    model_bytes = sum(t.numel() * t.element_size() for t in loaded(run.out).values())
    on_disk = sum((run.trained / p).stat().st_size for p in parts)
    assert model_bytes < on_disk < model_bytes * 1.1, "the partitions hold the model once, in its dtype"


@pytest.mark.distributed
def test_the_export_is_deepspeed_s_own_consolidation_of_the_final_checkpoint_and_loads(run):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoModelForCausalLM

    assert "consolidating 21 tensors from the partitions of 2 ZeRO-3 ranks" in run.stderr
    with unpickling.weights_only():  # DeepSpeed's loader, on the weights-only unpickler
        reference = get_fp32_state_dict_from_zero_checkpoint(str(run.checkpoint(4)))
    exported = loaded(run.out)
    assert sorted(exported) == sorted(reference)
    assert all(t.dtype == torch.float32 for t in exported.values()), "the model's dtype"
    assert max((exported[k] - reference[k]).abs().max().item() for k in exported) <= 1e-6
    model = AutoModelForCausalLM.from_pretrained(run.out)
    assert max((p.detach() - reference[n]).abs().max().item() for n, p in model.named_parameters()) <= 1e-6


@pytest.mark.distributed
def test_a_small_max_shard_size_cuts_the_consolidated_model_into_shards_that_load(run, tmp_path):
    from transformers import AutoModelForCausalLM

    written = zero3.consolidate(run.trained, tmp_path / "out", 40_000)
    assert len(written) > 3 and (tmp_path / "out" / INDEX_FILE).exists()
    single = loaded(run.out)
    sharded = loaded(tmp_path / "out")
    assert sorted(sharded) == sorted(single) and all(torch.equal(sharded[k], single[k]) for k in single)
    (tmp_path / "out" / "config.json").write_bytes((run.trained / "config.json").read_bytes())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert all(torch.equal(p.detach(), single[n]) for n, p in model.named_parameters())


def test_a_model_transformers_converts_on_load_is_gathered_on_save_and_others_are_not():
    from support.family_models import tiny_model

    from prefops_trainer.core.planner.phases import CONVERTED_CHECKPOINTS

    assert not zero3.renames_on_save(tiny_model("llama", 66)), "copied from its partitions"
    for model_type in sorted(CONVERTED_CHECKPOINTS - {"minimax"}):  # the families whose LoRA goes to peft too
        assert zero3.renames_on_save(tiny_model(model_type, 66)), model_type


def test_a_zero3_full_fine_tune_of_a_converted_family_exports_the_checkpoint_transformers_writes(tmp_path, tmp_job):
    """Mixtral's experts are fused on load and split again by ``save_pretrained``: copying partitions cannot split
    them, so its save gathers the model as before; the export loads and is the trained model."""
    from support.family_models import tiny_model
    from transformers import AutoModelForCausalLM

    source = tmp_path / "mixtral"
    tiny_model("mixtral", 66).save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (source / name).write_bytes((TINY / "model" / name).read_bytes())
    job = tmp_job(model={"source": str(source), "lora": None}, training={"maxSteps": 2, "deepspeed": {"stage": 3}})
    result = run_cli("run", job)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gathering the whole model on rank 0 to save it" in result.stderr
    stored = set(loaded(tmp_path / "out"))
    assert "model.layers.0.block_sparse_moe.experts.0.w1.weight" in stored, "the checkpoint's own names, experts apart"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.num_parameters() == tiny_model("mixtral", 66).num_parameters()


def test_a_tied_model_saved_rank_by_rank_exports_once_per_weight_and_loads_tied(tmp_path):
    """``zero3.save`` on a model whose parameters carry DeepSpeed's partition attributes (set here by DeepSpeed's
    rule, on 2 ranks): the tied head is written once, under the embedding's name, as ``save_pretrained`` writes it."""
    from deepspeed.utils.zero_to_fp32 import zero3_partitioned_param_info
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=66, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(config)
    for rank in range(2):
        for p in model.parameters():
            size, padding = zero3_partitioned_param_info(p.numel(), 2)
            flat = torch.cat([p.detach().reshape(-1), torch.zeros(padding)])
            p.ds_tensor, p.ds_shape = flat[rank * size : (rank + 1) * size].clone(), p.shape
        zero3.save(model, tmp_path / "trained", rank, 2)
    zero3.consolidate(tmp_path / "trained", tmp_path / "out", 10**9)
    config.save_pretrained(tmp_path / "out")
    assert "lm_head.weight" not in loaded(tmp_path / "out"), "the tied head once, as the embedding"
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()
    expected = model.state_dict()
    assert all(torch.equal(t, expected[n]) for n, t in again.state_dict().items())


@pytest.mark.distributed
@pytest.mark.integration
def test_partitions_written_on_two_nodes_reach_export_through_s3(run, tmp_path, s3):
    """Rank 1 on another node than rank 0: its partition is on its own disk alone. Each rank sends its own file;
    rank 0's marker records both; export fetches both, checks them and consolidates the model trained."""
    import shutil

    from prefops_trainer.adapters import stores, trained
    from prefops_trainer.core.uris import Uri
    from prefops_trainer.core.workspace import Workspace

    _server, bucket = s3
    stores.forget()
    ws = Workspace(Uri("s3", f"{bucket}/work"), Uri("s3", f"{bucket}/work/jobs/ns/t/run"), tmp_path / "export-pod")
    node = {0: tmp_path / "node-0", 1: tmp_path / "node-1"}
    shutil.copytree(run.trained, node[0], ignore=shutil.ignore_patterns(layout.partition_file(1, 2), "prefops-*"))
    node[1].mkdir()
    shutil.copyfile(run.trained / layout.partition_file(1, 2), node[1] / layout.partition_file(1, 2))
    sent = zero3.send_own(node[1], ws.trained, 1, 2) | zero3.send_own(node[0], ws.trained, 0, 2)
    assert sorted(sent) == [layout.partition_file(0, 2), layout.partition_file(1, 2)]
    trained.hand_over(ws, node[0], {"steps": 4}, sent)
    fetched = trained.fetch(ws, trained.result(ws))
    zero3.consolidate(fetched, tmp_path / "out", 10**9)
    single = loaded(run.out)
    assert all(torch.equal(t, single[n]) for n, t in loaded(tmp_path / "out").items())


@pytest.mark.distributed
def test_a_partition_changed_after_training_is_refused_naming_it(run, tmp_path):
    """Last of the module: it changes the shared run's files."""
    part = run.trained / layout.partition_file(1, 2)
    data = bytearray(part.read_bytes())
    data[-1] ^= 0xFF
    part.write_bytes(bytes(data))
    job = write_job(run.job.parent, "t", **(SPEC | {"output": {"uri": str(tmp_path / "again")}}))
    error = error_of(run_cli("export", job))
    assert layout.partition_file(1, 2) in error and "does not match its marker" in error
    assert not (tmp_path / "again" / "prefops.json").exists()
