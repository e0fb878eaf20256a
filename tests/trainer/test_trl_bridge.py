"""The one door to TRL's private API: it checks what it relies on, names the TRL version when something moved, and
no other trainer module touches those names."""

import re
import subprocess
from types import SimpleNamespace

import pytest
import torch
from support.trainer_jobs import ROOT, TINY

from prefops_trainer.adapters import trl_bridge
from prefops_trainer.adapters.trl_bridge import Reliance, TrlBoundaryError

SOURCE = ROOT / "trainer" / "src" / "prefops_trainer"
BRIDGE = "trainer/src/prefops_trainer/adapters/trl_bridge.py"


def private_names() -> set[str]:
    """The TRL names the bridge relies on, as they would appear in code: each name's last part, and each module."""
    names = {r.name.rsplit(".", 1)[-1] for r in trl_bridge.RELIES_ON} | {r.module for r in trl_bridge.RELIES_ON}
    return names | {"fused_lm_head", "trl.trainer"}


@pytest.mark.parametrize("name", sorted(private_names()))
def test_git_grep_finds_each_private_trl_name_in_the_bridge_alone(name):
    found = subprocess.run(["git", "grep", "--untracked", "-l", "-w", "-F", name, "--", "trainer/src"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    assert found == [BRIDGE]


def test_the_bridge_was_written_against_the_pinned_trl():
    pins = {
        "constraints.txt": (ROOT / "constraints.txt").read_text(),
        "trainer/pyproject.toml": (ROOT / "trainer" / "pyproject.toml").read_text(),
    }
    for where, text in pins.items():
        assert re.search(rf"^\s*\"?trl=={re.escape(trl_bridge.TESTED_WITH)}\b", text, re.M), where


def test_every_reliance_holds_in_the_installed_trl():
    trl_bridge.check()  # raises naming every missing piece


def test_a_missing_private_name_fails_naming_the_trl_version_and_the_piece():
    gone = Reliance("trl.trainer.dpo_trainer", "DPOTrainer._tokenize_pairs", ("self",), "a test")
    with pytest.raises(
        TrlBoundaryError, match=r"TRL 1\.16\.0: trl\.trainer\.dpo_trainer\.DPOTrainer\._tokenize_pairs is gone"
    ):
        trl_bridge.check((gone,))


def test_a_changed_signature_fails_naming_both_signatures():
    moved = Reliance("trl.trainer.dpo_trainer", "DPOTrainer._prepare_dataset", ("self", "dataset", "tokenizer"), "x")
    with pytest.raises(
        TrlBoundaryError,
        match=r"_prepare_dataset takes \(self, dataset, processing_class, args, dataset_name\), "
        r"expected \(self, dataset, tokenizer, \.\.\.\).* written against TRL 1\.16\.0",
    ):
        trl_bridge.check((moved,))


def test_a_private_method_reading_what_our_stand_in_lacks_fails_naming_it():
    def reads_more(self, dataset, processing_class, args, dataset_name):
        return args.padding_free

    with pytest.raises(TrlBoundaryError, match=r"TRL 1\.16\.0: .*reads_more reads args\.padding_free"):
        trl_bridge.call_with_stand_in(reads_more, SimpleNamespace(), [], None, SimpleNamespace(), "train")


def test_tokenized_pairs_carry_the_columns_the_precompute_pass_reads():
    import datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY / "model")
    rows = datasets.Dataset.from_list([{"prompt": "what is one plus one ?", "chosen": " two .", "rejected": " six .",
                                        "index": 0}])  # fmt: skip
    out = trl_bridge.prepare_pairs(rows, tok, max_length=64, truncation_mode="keep_start")
    assert out[0]["prompt_ids"] == tok("what is one plus one ?")["input_ids"]
    assert out[0]["chosen_ids"] == tok(" two .")["input_ids"] + [tok.eos_token_id]
    assert out[0]["rejected_ids"] == tok(" six .")["input_ids"] + [tok.eos_token_id]


def test_online_dpo_generate_returns_the_masks_the_bridge_reads():
    """Called for real on the tiny model: if TRL reorders or drops ``_generate``'s tuple, this fails."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    tok = AutoTokenizer.from_pretrained(TINY / "model")
    prompts = ["what is one plus one ?", "what color is the sky ? please", "hi"]
    args = OnlineDPOConfig(output_dir="/tmp/prefops-bridge", max_new_tokens=6, use_cpu=True, report_to=[],
                           per_device_train_batch_size=len(prompts), bf16=False)  # fmt: skip
    trainer = OnlineDPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(TINY / "model", dtype=torch.float32),
        reward_funcs=AutoModelForSequenceClassification.from_pretrained(TINY / "reward-model", num_labels=1),
        args=args,
        train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tok,
        reward_processing_classes=AutoTokenizer.from_pretrained(TINY / "reward-model"),
    )
    torch.manual_seed(0)
    out = trainer._generate(trainer.model, prompts)
    prompt_mask, completion_mask = trl_bridge.generated_masks(out, len(prompts))
    padded = tok(prompts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    assert torch.equal(prompt_mask.cpu(), padded["attention_mask"].repeat(2, 1))
    lengths = completion_mask.sum(dim=1)
    assert ((lengths >= 1) & (lengths <= 6)).all()
    ones_first = torch.arange(completion_mask.size(1)).unsqueeze(0) < lengths.unsqueeze(1)
    assert torch.equal(completion_mask.cpu().bool(), ones_first), "each completion mask is ones, then zeros"


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ((torch.ones(4, 3), torch.ones(4, 3), torch.ones(4, 2)), r"returned 3 values, expected 5"),
        (
            (None, torch.ones(4, 3), None, torch.ones(2, 2), None),
            r"completion_mask is \(2, 2\), expected \(4, length\)",
        ),
        ((None, [1, 1], None, torch.ones(4, 2), None), r"prompt_mask is list, expected \(4, length\)"),
    ],
    ids=["fewer-values", "wrong-rows", "not-a-tensor"],
)
def test_a_generate_result_of_another_shape_is_refused_naming_trl(out, message):
    with pytest.raises(TrlBoundaryError, match=rf"TRL 1\.16\.0: OnlineDPOTrainer\._generate.*{message}"):
        trl_bridge.generated_masks(out, 2)
