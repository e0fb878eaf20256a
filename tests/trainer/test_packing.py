"""Prefix sharing (``compute/packing.py``): a pair packed as ``[prompt, chosen, rejected]`` gives TRL's numbers.

The packed forward is compared with TRL's own concatenated forward (``add_fused_lm_head``, the call
``DPOTrainer._compute_loss`` makes) on the same model and batch: per-token log-probs, entropy, mean logits and
top-1, then every DPO loss TRL computes from them and the gradients of the weights, within 1e-5 in float32.
"""

from __future__ import annotations

import pytest
import torch
from support.packing import DPO_OUTPUTS, TOLERANCE, assert_same_outputs, dpo_trainer, random_rows, trl_batch
from support.trainer_jobs import TINY, job_doc

from prefops_trainer.adapters import trl_bridge
from prefops_trainer.compute import packing, prefix_sharing
from prefops_trainer.core.algorithms import DPO_LOSS_TYPES
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases import train as train_phase
from prefops_trainer.tiny import build_model

# ---- layout (pure) ----


def test_a_packed_pair_restarts_positions_after_the_prompt_and_hides_chosen_from_rejected():
    p = packing.pack([([1, 2, 3], [4, 5], [6, 7, 8])], pad_token_id=0)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 4, 5]]
    seen = packing.allowed(p)[0, 0]
    assert seen[5].tolist() == [True, True, True, False, False, True, False, False], "rejected: prompt, itself"
    assert seen[4].tolist() == [True] * 5 + [False] * 3, "chosen: prompt and earlier chosen"
    # first tokens of both completions are predicted by the prompt's last position (column 2)
    assert list(zip(p.score_col.tolist(), p.target.tolist(), p.side.tolist(), strict=True)) == [
        (2, 4, 0), (3, 5, 0), (2, 6, 1), (5, 7, 1), (6, 8, 1)
    ]  # fmt: skip
    assert p.unpacked_col.tolist() == [2, 3, 2, 3, 4], "where TRL's [prompt, completion] row predicts each token"


def test_pairs_sharing_a_row_never_see_each_other_and_padding_is_never_seen():
    p = packing.pack([([1], [2], [3]), ([4, 5], [6], [7])], pad_token_id=0, rows=[[0, 1], [1]])
    seen = packing.allowed(p)[:, 0]
    assert not seen[0, 3:, :3].any(), "the second pair of row 0 sees nothing of the first"
    pad = p.segment[1] == packing.PAD
    assert pad.tolist() == [False] * 4 + [True] * 3
    assert torch.equal(seen[1][:, pad], torch.eye(7, dtype=torch.bool)[:, pad]), "padding is seen only by itself"


def test_an_empty_prompt_leaves_the_first_completion_token_unscored_as_trl_does():
    p = packing.pack([([], [4, 5], [6])], pad_token_id=0)
    assert p.target.tolist() == [5], "no position predicts a sequence's first token"


def test_token_batches_respect_the_budget_longest_first():
    lengths = [5, 3, 9, 9, 1, 2, 40]
    batches = packing.token_batches(lengths, max_tokens=18)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert batches[0] == [6], "a row over the budget runs alone, first"
    assert all(len(b) * max(lengths[i] for i in b) <= 18 for b in batches[1:])
    assert batches[1] == [2, 3]


def test_batches_whose_prompts_differ_or_whose_layout_is_not_trls_are_not_packed():
    """keep_end truncation can cut a pair's two prompts differently: that batch takes TRL's layout."""
    ids = torch.tensor([[1, 2, 3, 4], [9, 2, 3, 5]])
    mask = torch.ones_like(ids)
    labels = torch.tensor([[-100, -100, -100, 4], [-100, -100, -100, 5]])
    assert packing.unpack_concatenated(ids, mask, labels) is None
    assert packing.unpack_concatenated(ids.clone().fill_(2), mask, labels) is not None
    holed = torch.tensor([[-100, 2, -100, 4], [-100, -100, -100, 5]])
    assert packing.unpack_concatenated(ids.clone().fill_(2), mask, holed) is None, "only TRL's own layout is packed"


def test_kernels_without_custom_masks_are_refused_by_name():
    p = packing.pack([([1], [2], [3])], pad_token_id=0)
    assert not packing.supported("flash_attention_2")
    with pytest.raises(ValueError, match="not 'flash_attention_2'"):
        packing.attention_mask(p, "flash_attention_2", torch.float32)


# ---- the packed forward against TRL's concatenated forward ----


def tiny_rows(tmp_path, data: str, max_length: int):
    job = parse_job(job_doc(tmp_path, dataset={"source": str(TINY / data), "maxLength": max_length}))
    rows = load_inputs(job).tokenized("train").select(range(8))
    return [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows]


def policy(attn: str, vocab: int = 200, hidden: int = 128, layers: int = 3, seed: int = 0):
    """A random Llama (GQA) with TRL's fused head, as DPOTrainer patches its policy, and our packed forward."""
    from trl.trainer.utils import add_fused_lm_head

    model = build_model(vocab, seed=seed, hidden=hidden, layers=layers)
    model.set_attn_implementation(attn)
    add_fused_lm_head(model, outputs=DPO_OUTPUTS)
    prefix_sharing.install(model, DPO_OUTPUTS)
    return model


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_outputs_equal_trls_concatenated_forward_on_random_pairs(attn):
    model = policy(attn)
    call = trl_batch(random_rows(6, 200, seed=1))
    packed = prefix_sharing.PackedCall(model, attn, torch.float32)
    assert_same_outputs(model(**call), packed(**call))
    assert packed.packed_calls == 1


@pytest.mark.parametrize(
    ("data", "max_length"),
    [("prefs.jsonl", 64), ("prefs-chat.jsonl", 64), ("prefs.jsonl", 12)],
    ids=["plain", "conversational", "truncated"],
)
def test_packed_outputs_equal_trls_concatenated_forward_on_the_tiny_data(tmp_path, data, max_length):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32)
    add_fused_lm_head(model, outputs=DPO_OUTPUTS)
    prefix_sharing.install(model, DPO_OUTPUTS)
    call = trl_batch(tiny_rows(tmp_path, data, max_length), max_length)
    if max_length == 12:
        assert (call["attention_mask"].sum(1) == 12).any(), "some pairs really are truncated"
    packed = prefix_sharing.PackedCall(model, "sdpa", torch.float32)
    assert_same_outputs(model(**call), packed(**call))
    assert packed.packed_calls == 1


def loss_and_grads(trainer, model, batch):
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_every_dpo_loss_and_its_gradients_equal_trls_concatenated_forward(tmp_path):
    """TRL's own ``compute_loss`` on one batch, every loss type: our packed forward underneath, then TRL's."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32)
    trainer, batch = dpo_trainer(tmp_path, model)
    batch["ref_chosen_logps"] = batch["ref_chosen_logps"] - 0.3  # the policy is no longer its own reference
    prefix_sharing.install(model, DPO_OUTPUTS)
    wrap = prefix_sharing.enable(trainer)
    for loss_type in DPO_LOSS_TYPES:
        trainer.loss_types, trainer.loss_weights = [loss_type], [1.0]
        theirs, theirs_grads = loss_and_grads(trainer, model, batch)
        packed = wrap(model)
        ours, our_grads = loss_and_grads(trainer, packed, batch)
        assert packed.packed_calls == 1
        assert abs(ours.item() - theirs.item()) <= TOLERANCE * max(1.0, abs(theirs.item())), loss_type
        assert our_grads.keys() == theirs_grads.keys() and len(our_grads) > 10
        for name, g in theirs_grads.items():
            bound = TOLERANCE * max(1.0, g.abs().max().item())
            assert (our_grads[name] - g).abs().max().item() <= bound, f"{loss_type}: gradient of {name}"


def train_logs(tmp_path, name: str, shared: bool, monkeypatch, **spec):
    """The train phase's per-step logs, and how many policy forwards ran packed."""
    packed = []
    original = prefix_sharing.PackedCall.__call__

    def counted(self, *args, **kwargs):
        before = self.packed_calls
        out = original(self, *args, **kwargs)
        packed.extend([1] * (self.packed_calls - before))
        return out

    monkeypatch.setattr(prefix_sharing.PackedCall, "__call__", counted)
    training = {"maxSteps": 3, "perDeviceBatchSize": 4, "learningRate": 1e-4, "prefixSharing": shared}
    inputs = load_inputs(parse_job(job_doc(tmp_path, name, training=training, **spec)))
    precompute_phase.run(inputs)
    report = train_phase.run(inputs)
    return report["logHistory"], len(packed)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_the_train_phase_with_prefix_sharing_logs_the_numbers_of_the_plain_path(tmp_path, monkeypatch, lora):
    spec = {} if lora else {"model": {"lora": None}}
    plain, plain_calls = train_logs(tmp_path, "plain", False, monkeypatch, **spec)
    shared, shared_calls = train_logs(tmp_path, "shared", True, monkeypatch, **spec)
    assert plain_calls == 0 and shared_calls == 3, "one packed policy forward per micro-batch"
    for a, b in zip(plain, shared, strict=True):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "entropy"):
            assert abs(a[key] - b[key]) <= TOLERANCE * max(1.0, abs(a[key])), key


# ---- the reference pass ----


@pytest.mark.parametrize("tokens_per_batch", [1, 100, 10_000], ids=["one-pair-batches", "small", "large"])
def test_reference_logps_do_not_depend_on_the_token_budget(tmp_path, tokens_per_batch):
    base = parse_job(job_doc(tmp_path / "a", reference={"batchSize": 1}))
    inputs = load_inputs(base)
    precompute_phase.run(inputs)
    reference = inputs.ref_cache("train").load()
    budget = load_inputs(parse_job(job_doc(tmp_path / "b", reference={"tokensPerBatch": tokens_per_batch})))
    precompute_phase.run(budget)
    table = budget.ref_cache("train").load()
    assert len(table) == len(reference)
    worst = max(abs(table.chosen - reference.chosen).max(), abs(table.rejected - reference.rejected).max())
    assert worst <= TOLERANCE


def test_flex_attention_block_mask_gives_the_sdpa_numbers_with_several_pairs_per_row():
    """The GPU path's block-sparse mask rule, checked in inference on the CPU (flex attention has no CPU
    backward): pairs packed three to a row give each pair's sdpa numbers."""
    model = policy("flex_attention", seed=3)
    dense = policy("sdpa", seed=3)
    rows = random_rows(6, 200, seed=4)
    pairs = [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in rows]
    head = trl_bridge.lm_head(model)
    with torch.inference_mode():
        packed = packing.pack(pairs, 0, rows=[[0, 1, 2], [3, 4], [5]])
        flex = packing.sums(packing.forward(model.model, packed, packing.block_mask(packed), head)["log_probs"], packed)
        alone = packing.pair_logps(dense.model, pairs, trl_bridge.lm_head(dense), "cpu")
    for a, b in zip(flex, alone, strict=True):
        assert (a.float() - b).abs().max().item() <= TOLERANCE


@pytest.mark.distributed
def test_prefix_sharing_under_deepspeed_zero3_on_two_ranks_logs_the_numbers_of_the_plain_path(tmp_path):
    """ZeRO-3 partitions the LM head: the packed forward gathers it as TRL's fused head does, on every rank."""
    import json

    from support.trainer_jobs import run_cli, write_job

    histories = []
    for name, shared in (("plain", False), ("shared", True)):
        training = {"maxSteps": 2, "perDeviceBatchSize": 4, "prefixSharing": shared, "deepspeed": {"stage": 3}}
        (tmp_path / name).mkdir()
        job = write_job(tmp_path / name, name, resources={"gpusPerNode": 0, "processesPerNode": 2}, training=training)
        for phase in ("precompute", "train"):
            result = run_cli(phase, job)
            assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(next((tmp_path / name / "work").rglob("phases/train.json")).read_text())
        assert report["worldSize"] == 2
        histories.append(report["logHistory"])
    for a, b in zip(*histories, strict=True):
        for key in ("loss", "rewards/chosen", "rewards/margins", "logps/rejected"):
            assert abs(a[key] - b[key]) <= TOLERANCE * max(1.0, abs(a[key])), key


def test_a_reference_shard_tokenizes_only_its_rows_and_names_a_bad_row_by_its_place_in_the_dataset(tmp_path):
    import json

    from prefops_trainer.core.errors import DataError

    good = {"prompt": "what is one plus one ?", "chosen": " two .", "rejected": " three ."}
    rows = [good] * 4 + [{**good, "prompt": "what " * 80 + "?"}, good]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    inputs = load_inputs(parse_job(job_doc(tmp_path, dataset={"source": str(data), "maxSamples": None})))
    assert precompute_phase.run(inputs, 0, 2)["splits"]["train"]["pairs"] == 3, "rows 0-2 hold no bad row"
    with pytest.raises(DataError, match=r"prefs\.jsonl: row 4: the prompt alone is 81 tokens"):
        precompute_phase.run(inputs, 1, 2)
