"""Benchmark: training with our precomputed reference vs TRL's online reference, and precompute throughput.

Measured in one run, on the same model, data and batch, each configuration in a fresh process (so peak RSS
is its own):

* train/ours       DPO full fine-tune reading reference log-probs from the prefops cache
* train/trl-online DPO full fine-tune with TRL computing the reference online (a second model in memory)
* pre/ours         prefops precompute (length-grouped batches, TRL's fused LM head)
* pre/trl          TRL's own precompute_ref_log_probs pass (dataset order, same batch size)

Prints a table of ratios against the TRL baseline measured in the same run. Absolute times on a shared
2-core machine mean little; the ratios are the result.

    python bench/trainer_step.py [--steps 30] [--pairs 384] [--hidden 384] [--layers 6] [--vocab 8000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

BATCH = 4
MAX_LENGTH = 192


def build_assets(root: Path, args) -> None:
    """A random Llama with a word-level vocabulary of ``args.vocab`` words and pairs of varied lengths."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(args.vocab)]
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 128),
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(root / "model")
    fast.save_pretrained(root / "model")
    rng = random.Random(0)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    with (root / "pairs.jsonl").open("w") as f:
        for _ in range(args.pairs):
            row = {"prompt": text(8, 120), "chosen": " " + text(4, 60), "rejected": " " + text(4, 60)}
            f.write(json.dumps(row) + "\n")


def job(root: Path, steps: int) -> dict:
    return {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": "bench"},
        "spec": {
            "model": {"source": str(root / "model"), "dtype": "float32"},
            "dataset": {"source": str(root / "pairs.jsonl"), "maxLength": MAX_LENGTH},
            "algorithm": {"name": "dpo"},
            "training": {
                "maxSteps": steps,
                "learningRate": 1e-5,
                "perDeviceBatchSize": BATCH,
                "checkpointEverySteps": 10**6,
            },
            "reference": {"batchSize": BATCH, "verifySamples": 0},
            "resources": {"gpusPerNode": 0},
            "output": {"uri": str(root / "out")},
            "storage": {"uri": str(root / "work")},
        },
    }


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    return StepTimer()


def trl_args(root: Path, steps: int, precompute: bool):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(root / "trl-out"),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=1e-5,
        max_length=MAX_LENGTH,
        precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=BATCH,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
    )


def worker(kind: str, root: Path, steps: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from prefops_trainer.core.spec import parse_job
    from prefops_trainer.inputs import load_inputs
    from prefops_trainer.phases import precompute as pre_phase
    from prefops_trainer.phases import train as train_phase
    from prefops_trainer.phases.train import trainers

    torch.manual_seed(0)
    out: dict = {}
    if kind == "pre/ours":
        inputs = load_inputs(parse_job(job(root, steps)))
        report = pre_phase.run(inputs)  # pairsPerSecond covers the forward passes only, as TRL's timing does
        out["pairs"] = len(inputs.splits["train"])
        out["seconds"] = out["pairs"] / report["splits"]["train"]["pairsPerSecond"]
    elif kind == "pre/trl":
        import datasets
        from trl import DPOTrainer

        ds = datasets.load_dataset("json", data_files=str(root / "pairs.jsonl"), split="train")
        timing = {}

        class Timed(DPOTrainer):
            def _precompute_ref_logps(self, dataset, name, batch_size):
                t0 = time.perf_counter()
                result = super()._precompute_ref_logps(dataset, name, batch_size)
                timing["seconds"] = time.perf_counter() - t0
                return result

        model = AutoModelForCausalLM.from_pretrained(root / "model", dtype=torch.float32)
        Timed(model=model, args=trl_args(root, steps, True), train_dataset=ds)
        out = {"seconds": timing["seconds"], "pairs": len(ds)}
    elif kind == "train/ours":
        inputs = load_inputs(parse_job(job(root, steps)))
        timer = step_timer()
        original = trainers.build

        def build(*a, **kw):
            trainer = original(*a, **kw)
            trainer.add_callback(timer)
            return trainer

        trainers.build = build
        report = train_phase.run(inputs)
        out = {"step_seconds": timer.times, "steps": report["steps"]}
    elif kind == "train/trl-online":
        import datasets
        from trl import DPOTrainer

        ds = datasets.load_dataset("json", data_files=str(root / "pairs.jsonl"), split="train")
        model = AutoModelForCausalLM.from_pretrained(root / "model", dtype=torch.float32)
        timer = step_timer()
        trainer = DPOTrainer(model=model, args=trl_args(root, steps, False), train_dataset=ds, callbacks=[timer])
        assert trainer.ref_model is not None, "TRL's baseline keeps a reference model"
        trainer.train()
        out = {"step_seconds": timer.times, "steps": len(timer.times)}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_worker(kind: str, root: Path, steps: int) -> dict:
    env = {
        **os.environ,
        "HF_DATASETS_CACHE": str(root / f"hf-cache-{kind.replace('/', '-')}"),
        "PREFOPS_METRICS_PORT": "off",
    }
    result = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--root", str(root), "--steps", str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"worker {kind} failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


def steady(times: list[float]) -> float:
    """Median step time after the first three (warm-up) steps."""
    return statistics.median(times[3:] if len(times) > 6 else times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--pairs", type=int, default=384)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--worker")
    p.add_argument("--root", type=Path)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.root, args.steps)))
        return
    with tempfile.TemporaryDirectory(prefix="prefops-bench-") as tmp:
        root = Path(tmp)
        build_assets(root, args)
        res = {kind: run_worker(kind, root, args.steps) for kind in ("pre/trl", "pre/ours", "train/trl-online")}
        res["train/ours"] = run_worker("train/ours", root, args.steps)  # reads the cache pre/ours wrote
    trl_step, our_step = steady(res["train/trl-online"]["step_seconds"]), steady(res["train/ours"]["step_seconds"])
    trl_pre = res["pre/trl"]["pairs"] / res["pre/trl"]["seconds"]
    our_pre = res["pre/ours"]["pairs"] / res["pre/ours"]["seconds"]
    print(
        f"model: Llama hidden {args.hidden} x {args.layers} layers, vocab {args.vocab}; {args.pairs} pairs, "
        f"batch {BATCH}, maxLength {MAX_LENGTH}, full fine-tune, float32 on CPU; {args.steps} steps"
    )
    print()
    print(f"| {'measure':<34} | {'TRL (baseline)':>14} | {'prefops':>10} | {'ratio':>7} | target |")
    print(f"|{'-' * 36}|{'-' * 16}|{'-' * 12}|{'-' * 9}|--------|")
    rows = [
        ("training steps/s", 1 / trl_step, 1 / our_step, ">= 1.25x"),
        (
            "peak RSS while training (MB)",
            res["train/trl-online"]["peak_rss_mb"],
            res["train/ours"]["peak_rss_mb"],
            "< 1x",
        ),
        ("precompute pairs/s", trl_pre, our_pre, ">= 1x"),
    ]
    for name, base, ours, target in rows:
        print(f"| {name:<34} | {base:>14.2f} | {ours:>10.2f} | {ours / base:>6.2f}x | {target:<6} |")


if __name__ == "__main__":
    main()
