"""A tiny Llama, a word-level tokenizer with a chat template, and a learnable preference dataset.

Everything is built deterministically from a seed with no download, so the demo and the tests run offline:

    python -m prefops_trainer.tiny examples/tiny

writes ``model/`` (safetensors, config, tokenizer), ``reward-model/`` (a tiny one-score classifier for Online
DPO), ``prefs.jsonl`` (plain prompt/chosen/rejected rows), ``prefs-chat.jsonl`` (the same pairs in the
conversational form) and ``prefs-split/`` (``train.jsonl`` and ``test.jsonl``, a held-out split for
``dataset.evalSplit: test``).

The preference is learnable: the chosen answer is the polite, correct one; the rejected one is rude (right or
wrong), or polite but wrong. In ``prefs.jsonl`` a polite-but-wrong rejection also lacks the chosen answers' closing
thanks, so reward accuracy climbs to 1.0 within a few epochs. ``prefs-split/`` makes those rejections end exactly as
the chosen answers do, so only the answer tells them apart: politeness is learnt from any question, correctness
only from the questions seen. Its held-out split asks arithmetic questions training never sees (:data:`HELD_OUT`)
beside colour questions it does, so the held-out reward accuracy is informative: well above chance (politeness
generalizes), below 1.0 (the sums of unseen questions are not known).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
COLORS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red", "sun": "yellow"}
POLITE = ["sure", "happy", "to", "help", "the", "answer", "is", "thanks", "for", "asking", "glad", "it"]
RUDE = ["ugh", "whatever", "go", "away", "no", "idea", "stop", "bothering", "me", "boring", "question"]
#: The arithmetic questions (a plus b) only the held-out split of ``prefs-split/`` asks.
HELD_OUT = frozenset({(0, 3), (1, 4), (2, 2), (3, 1), (4, 3), (5, 0)})


def _pairs(
    n: int, seed: int, sums: list[tuple[int, int]] | None = None, hard: bool = False
) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) triples: arithmetic and colour questions; chosen is polite and right. The
    arithmetic questions are drawn from ``sums`` (default: every a in 0..5 plus b in 0..4); ``hard`` makes the
    polite-but-wrong rejections end exactly as the chosen answers do, so only the answer tells them apart."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        if rng.random() < 0.6:
            a, b = rng.choice(sums) if sums else (rng.randrange(0, 6), rng.randrange(0, 5))
            prompt = f"what is {NUMBERS[a]} plus {NUMBERS[b]} ?"
            right, wrong = NUMBERS[a + b], NUMBERS[(a + b + rng.randrange(1, 5)) % len(NUMBERS)]
        else:
            thing = rng.choice(sorted(COLORS))
            prompt = f"what color is the {thing} ?"
            right = COLORS[thing]
            wrong = rng.choice(sorted(set(COLORS.values()) - {right}))
        polite = rng.choice(["sure , the answer is", "happy to help : it is", "glad you asked , it is"])
        rude = rng.choice(["ugh , whatever ,", "go away , no idea ,", "stop bothering me ,"])
        chosen = f" {polite} {right} . thanks for asking ."
        polite_wrong = f" {polite} {wrong} ." + (" thanks for asking ." if hard else "")
        rejected = rng.choice([f" {rude} {wrong} .", f" {rude} {right} .", polite_wrong])
        rows.append((prompt, chosen, rejected))
    return rows


def _split_pairs(n: int, seed: int, held_out: bool) -> list[tuple[str, str, str]]:
    """The harder pairs of ``prefs-split/``: the arithmetic questions of :data:`HELD_OUT` when ``held_out``, the
    others otherwise."""
    sums = [(a, b) for a in range(6) for b in range(5) if ((a, b) in HELD_OUT) == held_out]
    return _pairs(n, seed, sums, hard=True)


def _write_plain(path: Path, rows: list[tuple[str, str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for prompt, chosen, rejected in rows:
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")


def write_dataset(out: Path, n: int = 256, seed: int = 0, n_test: int = 64) -> None:
    """Write under ``out``: ``prefs.jsonl`` (plain form) and ``prefs-chat.jsonl`` (the same pairs, conversational
    form); ``prefs-split/train.jsonl`` (``n`` harder pairs) and ``prefs-split/test.jsonl`` (``n_test`` held-out
    pairs)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = _pairs(n, seed)
    _write_plain(out / "prefs.jsonl", rows)
    _write_plain(out / "prefs-split" / "train.jsonl", _split_pairs(n, seed, held_out=False))
    _write_plain(out / "prefs-split" / "test.jsonl", _split_pairs(n_test, seed + 1, held_out=True))
    with (out / "prefs-chat.jsonl").open("w") as f:
        for prompt, chosen, rejected in rows:
            row = {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen.strip()}],
                "rejected": [{"role": "assistant", "content": rejected.strip()}],
            }
            f.write(json.dumps(row) + "\n")


def vocabulary() -> list[str]:
    words = {"what", "is", "plus", "?", "color", "the", ",", ".", ":", "you", "asked"}
    words |= set(NUMBERS) | set(COLORS) | set(COLORS.values()) | set(POLITE) | set(RUDE)
    words |= {"user", "assistant", "system"}
    return SPECIALS + sorted(words)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer (whitespace + punctuation split) with a chat template. No BOS is added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=SPECIALS[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama (about 100k parameters)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return LlamaForCausalLM(config)


def write_model(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> None:
    """Save the tiny model and tokenizer under ``out`` in the layout ``from_pretrained`` reads."""
    tok = build_tokenizer()
    model = build_model(len(tok), seed=seed, hidden=hidden, layers=layers)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def write_reward_model(out: Path, seed: int = 1) -> None:
    """A tiny sequence-classification Llama (one score) with the same tokenizer: Online DPO's judge in tests."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m prefops_trainer.tiny", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--test-pairs", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    write_model(args.out / "model", seed=args.seed)
    write_reward_model(args.out / "reward-model", seed=args.seed + 1)
    write_dataset(args.out, n=args.pairs, seed=args.seed, n_test=args.test_pairs)


if __name__ == "__main__":
    main()
