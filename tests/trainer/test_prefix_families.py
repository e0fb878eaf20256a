"""Prefix sharing family by family (``core/prefix_families.py``): a tiny random model of each family transformers
ships that the registry lists, packed, against TRL's own unpacked computation on the same model and batch.

A packed family must give TRL's per-token log-probs (and entropy, mean logit, top-1), its DPO loss (TRL's own
``compute_loss``) and its gradients, within 1e-5 in float32, with sliding windows shorter than the pairs; and where a
family has a window, packing it without the window must differ (so the window is really exercised). A refused family
must be refused, and packing it anyway must differ from TRL's numbers or fail: the reason is real.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from support.family_models import WINDOW, tiny_model
from support.packing import DPO_OUTPUTS, TOLERANCE, assert_same_outputs, dpo_trainer, random_rows, trl_batch

from prefops_trainer.compute import logprobs, packing, prefix_sharing
from prefops_trainer.core.prefix_families import FAMILIES, FULL, SLIDING, family, verdict

VOCAB = 200
PACKED = [f.model_type for f in FAMILIES if f.packed]
REFUSED = [f.model_type for f in FAMILIES if not f.packed and f.checked]


def pairs_longer_than_the_window(n: int = 4, seed: int = 1) -> list[dict]:
    return random_rows(n, VOCAB, seed=seed, prompt=(WINDOW + 1, 14), completion=(WINDOW, 12))


def policy(model_type: str, attn: str = "sdpa"):
    """A tiny model of the family with TRL's fused head (as ``DPOTrainer`` patches its policy) and ours."""
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_model(model_type, VOCAB, attn)
    add_fused_lm_head(model, outputs=DPO_OUTPUTS)
    prefix_sharing.install(model, DPO_OUTPUTS)
    return model


def dpo_batch(rows: list[dict]) -> dict:
    """``DPOTrainer``'s training batch of ``rows`` (its collator), with reference log-probs the policy is not at."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=0)(rows)
    n = len(rows)
    return batch | {"ref_chosen_logps": -torch.linspace(40, 50, n), "ref_rejected_logps": -torch.linspace(45, 48, n)}


@pytest.fixture(scope="module")
def trl_loss(tmp_path_factory):
    """TRL's own ``DPOTrainer.compute_loss`` (built once, on the tiny Llama), called on any model and batch."""
    from support.trainer_jobs import TINY
    from transformers import AutoModelForCausalLM

    trainer, _ = dpo_trainer(tmp_path_factory.mktemp("trl"), AutoModelForCausalLM.from_pretrained(TINY / "model"))
    return trainer


def loss_and_grads(trainer, model, batch):
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_type", PACKED)
def test_a_packed_family_gives_trls_log_probs_loss_and_gradients(trl_loss, model_type):
    model = policy(model_type)
    decision = prefix_sharing.decide(model)
    assert decision.packed, decision.reason
    attn = model.config._attn_implementation
    rows = pairs_longer_than_the_window()
    packed = prefix_sharing.PackedCall(model, attn, torch.float32, decision.plan)
    with torch.no_grad():
        assert_same_outputs(model(**trl_batch(rows)), packed(**trl_batch(rows)))
    theirs, their_grads = loss_and_grads(trl_loss, model, dpo_batch(rows))
    ours, our_grads = loss_and_grads(trl_loss, packed, dpo_batch(rows))
    assert packed.packed_calls == 2, "both our calls ran packed"
    assert abs(ours.item() - theirs.item()) <= TOLERANCE * max(1.0, abs(theirs.item()))
    assert our_grads.keys() == their_grads.keys() and our_grads
    for name, g in their_grads.items():
        assert (our_grads[name] - g).abs().max().item() <= TOLERANCE * max(1.0, g.abs().max().item()), name


@pytest.mark.parametrize(
    "model_type", [f.model_type for f in FAMILIES if f.packed and (f.window or f.masks == "by-layer-type")]
)
def test_a_windowed_family_packed_without_its_window_differs(model_type):
    """The test above crosses the windows: a packed mask without them gives other numbers."""
    model = policy(model_type)
    plan = prefix_sharing.decide(model).plan
    assert plan is not None and WINDOW in plan.layers.values(), "the tiny model has windowed layers"
    call = trl_batch(pairs_longer_than_the_window())
    windowless = type(plan)(plan.by_layer_type, dict.fromkeys(plan.layers))
    with torch.no_grad():
        theirs = model(**call).log_probs
        ours = prefix_sharing.PackedCall(model, model.config._attn_implementation, torch.float32, windowless)(**call)
    assert (theirs - ours.log_probs).abs().max().item() > 1e-3


@pytest.mark.parametrize("model_type", REFUSED)
def test_a_refused_family_is_refused_and_packing_it_anyway_differs_or_fails(model_type):
    model = policy(model_type)
    decision = prefix_sharing.decide(model)
    assert not decision.packed and family(model_type).note in decision.reason
    call = trl_batch(pairs_longer_than_the_window())
    naive = prefix_sharing.PackedCall(model, model.config._attn_implementation, torch.float32)
    with torch.no_grad():
        theirs = model(**call).log_probs
        try:
            ours = naive(**call).log_probs
        except (ValueError, RuntimeError, TypeError):
            return  # a prepared 4D mask breaks it outright
    assert (theirs - ours).abs().max().item() > 1e-4


def test_every_family_the_registry_names_is_one_transformers_ships():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    assert {f.model_type for f in FAMILIES} <= set(CONFIG_MAPPING_NAMES)
    assert len({f.model_type for f in FAMILIES}) == len(FAMILIES), "each family once"


# ---- the verdict (pure) ----


def config(model_type: str, **attrs):
    return SimpleNamespace(model_type=model_type, **attrs)


def test_an_unlisted_family_and_remote_code_keep_trls_layout_saying_why():
    assert verdict(config("mymodel")).status == (
        "off: model family 'mymodel' is not verified for prefix sharing (docs/prefix-sharing.md)"
    )
    remote = verdict(config("llama", auto_map={"AutoModelForCausalLM": "x.Y"}))
    assert remote.status.startswith("off: model type 'llama' runs remote code (auto_map)")


def test_sliding_windows_come_from_the_config_as_the_family_reads_it():
    assert verdict(config("mistral", sliding_window=4096)).plan.layers == {"": 4096}
    assert verdict(config("mistral", sliding_window=None)).plan.layers == {"": None}
    assert verdict(config("llama", sliding_window=4096)).plan.layers == {"": None}, "Llama never windows"
    gemma = verdict(config("gemma2", sliding_window=8, layer_types=[SLIDING, FULL, SLIDING])).plan
    assert gemma.by_layer_type and gemma.layers == {FULL: None, SLIDING: 8}


def test_a_layer_type_without_a_packed_mask_and_alibi_are_refused_by_name():
    chunked = verdict(config("qwen2", sliding_window=8, layer_types=[FULL, "chunked_attention"]))
    assert chunked.status == "off: Qwen2 / Qwen2.5: layer types chunked_attention have no packed mask"
    assert "ALiBi" in verdict(config("falcon", alibi=True)).reason
    assert verdict(config("falcon", alibi=False)).packed


def test_a_kernel_without_custom_masks_keeps_trls_layout_saying_why():
    model = tiny_model("llama", VOCAB, "eager")
    model.config._attn_implementation = "flash_attention_2"
    assert prefix_sharing.decide(model).status == (
        "off: attention kernel flash_attention_2 takes no custom mask (use sdpa, eager or flex_attention)"
    )


def test_a_window_hides_keys_as_many_positions_back_in_both_sequences_of_a_pair():
    p = packing.pack([([1, 2, 3], [4, 5], [6, 7])], pad_token_id=0)  # positions 0 1 2 | 3 4 | 3 4
    seen = packing.allowed(p, window=2)[0, 0].int().tolist()
    assert seen[4] == [0, 0, 0, 1, 1, 0, 0], "chosen at 4 sees positions 3 and 4"
    assert seen[6] == [0, 0, 0, 0, 0, 1, 1], "rejected at 4 sees rejected 3 and itself, not the chosen ones"
    assert seen[5] == [0, 0, 1, 0, 0, 1, 0], "rejected at 3 sees the prompt's last token and itself"


# ---- the GPU kernel's mask and the reference pass ----


@pytest.fixture
def fresh_compile():
    """Flex attention runs compiled; on the CPU, torch 2.13's inductor miscompiles it when a second shape makes it
    recompile with dynamic shapes (a C++ codegen error), so each test compiles from scratch."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("model_type", ["mistral", "gemma2"])
def test_flex_attention_block_masks_with_windows_give_the_sdpa_numbers(model_type, fresh_compile):
    """The GPU path's block mask (windows included), checked in inference on the CPU (no flex backward here)."""
    rows = pairs_longer_than_the_window()
    outputs = []
    for attn in ("flex_attention", "eager"):
        model = policy(model_type, attn)
        plan = prefix_sharing.decide(model).plan
        with torch.inference_mode():
            outputs.append(prefix_sharing.PackedCall(model, attn, torch.float32, plan)(**trl_batch(rows)))
    assert_same_outputs(*outputs)


@pytest.mark.parametrize("model_type", ["mistral", "gemma2", "mpt"])
def test_the_reference_pass_gives_trls_sums_for_windowed_and_refused_families(model_type, monkeypatch):
    """Packed (with windows) where the family packs, TRL's layout where it is refused; TRL's numbers either way."""
    import datasets

    from prefops_trainer.adapters import trl_bridge

    packed_batches = []
    original = packing.pair_logps
    monkeypatch.setattr(packing, "pair_logps", lambda *a, **k: packed_batches.append(1) or original(*a, **k))
    model = tiny_model(model_type, VOCAB)
    logprobs.prepare_model(model)
    rows = pairs_longer_than_the_window(6, seed=5)
    table = datasets.Dataset.from_list([{"index": i, **r} for i, r in enumerate(rows)])
    ours = logprobs.compute(model, table, pad_token_id=0, max_length=None, truncation_mode="keep_start", batch_size=3)
    collate = trl_bridge.preference_collator(0, None, "keep_start")
    theirs = logprobs.forward_logps(model, collate(rows), torch.device("cpu"))
    assert bool(packed_batches) == family(model_type).packed
    for a, b in zip((ours.chosen, ours.rejected), theirs, strict=True):
        assert (torch.tensor(a) - b).abs().max().item() <= TOLERANCE * max(1.0, b.abs().max().item())


# ---- the kernel auto picks, and what the train phase reports ----


def test_auto_picks_flex_attention_on_cuda_only_when_training_packs_pairs():
    from prefops_trainer.core.hardware import Machine, auto_attention

    gpu_with_flash = Machine(cuda=True, bf16=True, flash_attn=True)
    assert auto_attention(gpu_with_flash, packs_pairs=True) == "flex_attention"
    assert auto_attention(gpu_with_flash, packs_pairs=False) == "flash_attention_2"
    assert auto_attention(Machine(cuda=True, bf16=True, flash_attn=False), packs_pairs=False) is None
    assert auto_attention(Machine(cuda=False, bf16=False, flash_attn=True), packs_pairs=True) is None, "CPU: default"


def saved_model(tmp_path, model_type: str):
    """A tiny random ``model_type`` saved with the tiny tokenizer, as a job's model source."""
    from support.trainer_jobs import TINY
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY / "model")
    path = tmp_path / model_type
    tiny_model(model_type, len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def train_report(tmp_path, name: str, source, shared: bool) -> dict:
    from support.trainer_jobs import job_doc

    from prefops_trainer.core.spec import parse_job
    from prefops_trainer.inputs import load_inputs
    from prefops_trainer.phases import precompute as precompute_phase
    from prefops_trainer.phases import train as train_phase

    training = {"maxSteps": 2, "perDeviceBatchSize": 4, "learningRate": 1e-3, "prefixSharing": shared}
    doc = job_doc(tmp_path / name, name, model={"source": str(source), "lora": None}, training=training,
                  dataset={"maxSamples": 16})  # fmt: skip
    inputs = load_inputs(parse_job(doc))
    assert inputs.packs_pairs == (shared and family(verdict_type(source)).packed)
    precompute_phase.run(inputs)
    return train_phase.run(inputs)


def verdict_type(source) -> str:
    import json

    return json.loads((source / "config.json").read_text())["model_type"]


def test_a_windowed_family_trains_packed_with_the_numbers_of_the_plain_path(tmp_path):
    """Gemma 2 (no sdpa kernel: auto loads it with its default, eager), sliding windows shorter than the pairs."""
    source = saved_model(tmp_path, "gemma2")
    plain = train_report(tmp_path, "plain", source, shared=False)
    shared = train_report(tmp_path, "shared", source, shared=True)
    assert "prefixSharing" not in plain and shared["prefixSharing"] == "on"
    for a, b in zip(plain["logHistory"], shared["logHistory"], strict=True):
        for key in ("loss", "rewards/chosen", "rewards/margins", "logps/rejected", "entropy"):
            assert abs(a[key] - b[key]) <= TOLERANCE * max(1.0, abs(a[key])), key


def test_a_refused_family_trains_in_trls_layout_and_the_report_says_why(tmp_path, caplog):
    import logging

    source = saved_model(tmp_path, "gpt_neo")
    with caplog.at_level(logging.INFO, logger="prefops_trainer.compute.prefix_sharing"):
        report = train_report(tmp_path, "neo", source, shared=True)
    reason = f"off: GPT-Neo: {family('gpt_neo').note}"
    assert report["prefixSharing"] == reason and report["steps"] == 2
    assert f"prefix sharing {reason}" in caplog.text
