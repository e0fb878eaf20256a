"""Benchmark: one DPO job end to end, and a 4-point beta sweep, prefops against TRL at its best, at each
prompt/completion length ratio (0.3, 1, 2, 3).

What each side runs, per repetition (kinds interleaved):

* TRL, two sweeps: four scripts with beta 0.05, 0.1, 0.2, 0.5, one after another, sharing one Hugging Face datasets
  cache (fresh for each sweep), as a user running a TRL sweep on one machine would: later trials reuse the tokenized
  data and, with ``precompute_ref_log_probs=True``, TRL's own cache of reference log-probs (keyed by the data and
  the model's weights). Each script loads the model and data, trains one epoch with LoRA, and saves the adapter.
  One sweep has the reference online (the model with its adapter disabled, one more forward per micro-batch), the
  other ``precompute_ref_log_probs=True``; each with TRL's best options here: its sampler (random or
  ``group_by_length``) and ``precompute_ref_batch_size`` chosen by a tuning run before the repetitions.
* prefops: four ``prefops-trainer run`` jobs with the same betas sharing one storage, each job its own process with
  a fresh datasets cache, as a pod would be: the first computes the reference log-probs (a cache miss), the other
  three find them (``cacheHit: true``); with ``training.groupByLength`` (length-grouped batches, the sampler TRL's
  best runs pick here).

Both sides set gradient checkpointing explicitly, the same (TRL 1.16 turns it on by default). Both save the trained
adapter; our export phase (merge LoRA, model card, checksums, curves), which the TRL script does not do, is timed
apart and left out of our wall time (its seconds come from the job's own report).

Rows: one job end to end (each side's first trial, a cache miss / TRL's faster mode); the sweep's total (our four
jobs / TRL's faster sweep).

    python bench/sweep.py [--quick] [--reps 3] [--pairs 192] [--ratios 0.3 1 2 3] [--gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import uuid
from argparse import Namespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib.common import (
    RATIOS,
    Row,
    Shape,
    best_of,
    build_assets,
    fresh_env,
    interleaved,
    prefops_job,
    print_ratio_summary,
    print_table,
    ratio_label,
    run,
    write_job,
)
from trainer_step import TRL_REF_BATCHES, tune_trl_reference_batch

BETAS = (0.05, 0.1, 0.2, 0.5)
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
LEARNING_RATE = 5e-4
MODES = ("online", "precompute")
SAMPLERS = ("random", "group_by_length")

TRL_JOB = """
import json, sys, datasets, torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

root, out, beta, mode, sampler = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
batch, reference_batch, max_length, lr = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), float(sys.argv[9])
checkpointing = sys.argv[10] == "on"
tok = AutoTokenizer.from_pretrained(f"{root}/model")
rows = datasets.load_dataset("json", data_files=f"{root}/pairs.jsonl", split="train")
grouped = sampler == "group_by_length"
if grouped:  # the sampler reads a length column: the longer side of each pair, in tokens
    def length(r):
        side = max(len(tok(r[k])["input_ids"]) for k in ("chosen", "rejected"))
        return {"length": len(tok(r["prompt"])["input_ids"]) + side + 1}
    rows = rows.map(length)
model = AutoModelForCausalLM.from_pretrained(f"{root}/model", dtype=torch.float32, attn_implementation="sdpa")
args = DPOConfig(output_dir=out, beta=beta, num_train_epochs=1, per_device_train_batch_size=batch,
                 learning_rate=lr, max_length=max_length, precompute_ref_log_probs=mode == "precompute",
                 precompute_ref_batch_size=reference_batch, gradient_checkpointing=checkpointing,
                 train_sampling_strategy=sampler, remove_unused_columns=not grouped, seed=42, data_seed=42,
                 logging_steps=1, save_strategy="no", report_to=[], bf16=False, use_cpu=True, disable_tqdm=True)
lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = DPOTrainer(model=model, args=args, train_dataset=rows, peft_config=lora, processing_class=tok)
assert trainer.args.gradient_checkpointing == checkpointing
trainer.train()
trainer.save_model(out)
"""


def trl_job(root: Path, shape: Shape, beta: float, mode: str, config: dict, env: dict) -> float:
    out = root / "trl-out" / uuid.uuid4().hex[:8]
    argv = [sys.executable, "-c", TRL_JOB, str(root), str(out), str(beta), mode, config["sampler"]]
    argv += [str(shape.batch), str(config["ref_batch"]), str(shape.max_length), str(LEARNING_RATE)]
    argv += ["on" if shape.gradient_checkpointing else "off"]
    return run(argv, env).wall


def trl_sweep(root: Path, shape: Shape, mode: str, config: dict) -> list[float]:
    """Four TRL scripts, one after another, sharing one datasets cache (fresh for this sweep): each one's wall."""
    env = fresh_env(root)
    return [trl_job(root, shape, beta, mode, config, env) for beta in BETAS]


def our_sweep(root: Path, shape: Shape, rep: int) -> list[dict]:
    """Four jobs, one storage: wall time of each without its export phase, the export, and whether it hit."""
    storage = root / f"storage-{rep}"
    jobs = []
    for beta in BETAS:
        doc = prefops_job(root, shape, f"beta-{beta}-{rep}".replace(".", "-"), storage,
                          model={"lora": LORA}, algorithm={"name": "dpo", "beta": beta},
                          training={"epochs": 1, "learningRate": LEARNING_RATE})  # fmt: skip
        done = run([sys.executable, "-m", "prefops_trainer", "run", str(write_job(root, doc))], fresh_env(root))
        manifest = json.loads(Path(doc["spec"]["output"]["uri"], "prefops.json").read_text())
        export = manifest["phases"]["export"]["seconds"]
        hit = manifest["phases"]["precompute"]["cacheHit"]
        jobs.append({"wall": done.wall - export, "export": export, "hit": hit})
    assert [j["hit"] for j in jobs] == [False, True, True, True], "the first job computes, the others hit"
    return jobs


def tune_trl(root: Path, shape: Shape, args) -> dict[str, dict]:
    """TRL's best options here, per mode: the precompute batch size (its reference pass alone, at each candidate),
    then the sampler (one job of each, fresh cache)."""
    step_args = Namespace(steps=1)
    ref_batch, _ = tune_trl_reference_batch(root, step_args, shape, tuple(args.trl_ref_batches))
    configs = {}
    for mode in MODES:
        walls = {s: trl_job(root, shape, BETAS[0], mode, {"sampler": s, "ref_batch": ref_batch}, fresh_env(root))
                 for s in SAMPLERS}  # fmt: skip
        sampler = min(walls, key=lambda s: walls[s])
        configs[mode] = {"sampler": sampler, "ref_batch": ref_batch, "tuning_walls": walls}
        print(f"  tune TRL {mode}: {json.dumps(configs[mode])}", file=sys.stderr, flush=True)
    return configs


def measure(root: Path, args, shape: Shape) -> tuple[dict, dict, dict]:
    data = build_assets(root, shape)
    configs = tune_trl(root, shape, args)
    res: dict[str, list] = {"trl/online": [], "trl/precompute": [], "prefops": []}
    for rep, kind in interleaved(args.reps, list(res)):
        if kind == "prefops":
            value = our_sweep(root, shape, rep)
        else:
            value = trl_sweep(root, shape, kind[4:], configs[kind[4:]])
        res[kind].append(value)
        print(f"  rep {rep + 1} {kind}: {json.dumps(value)}", file=sys.stderr, flush=True)
    return data, res, configs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small smoke run (numbers mean little)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--pairs", type=int, default=192, help="pairs: one epoch of pairs / batch optimizer steps")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="prompt/completion length ratios")
    p.add_argument("--gradient-checkpointing", action="store_true", help="on for both sides (default: off for both)")
    p.add_argument("--trl-ref-batches", type=int, nargs="+", default=list(TRL_REF_BATCHES))
    args = p.parse_args()
    if args.quick:
        args.reps, args.pairs, args.hidden, args.layers, args.trl_ref_batches = 1, 16, 128, 2, [4, 8]
    tables, measured = {}, {}
    for ratio in args.ratios:
        shape = Shape.at_ratio(ratio, hidden=args.hidden, layers=args.layers, pairs=args.pairs,
                               gradient_checkpointing=args.gradient_checkpointing)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix=f"prefops-bench-sweep-{ratio_label(ratio)}-") as tmp:
            data, res, configs = measure(Path(tmp), args, shape)
        tables[ratio], measured[ratio] = report(shape, ratio, data, res, configs), data["ratio"]
    print_ratio_summary("One job and a beta sweep: prefops / TRL at its best, by prompt/completion ratio", tables,
                        measured)  # fmt: skip


def report(shape: Shape, ratio: float, data: dict, res: dict[str, list], configs: dict) -> list[Row]:
    first = {m: [s[0] for s in res[f"trl/{m}"]] for m in MODES}
    totals = {m: [sum(s) for s in res[f"trl/{m}"]] for m in MODES}
    one_mode, one_best = best_of(first, higher_is_better=False)
    sweep_mode, sweep_best = best_of(totals, higher_is_better=False)
    ours_first = [s[0]["wall"] for s in res["prefops"]]
    ours_total = [sum(j["wall"] for j in s) for s in res["prefops"]]
    rows = [
        Row("one job end to end (reference + training), wall", ours_first, one_best, "s", "<= 0.75",
            f"TRL best: {_described(one_mode, configs)}"),
        Row(f"{len(BETAS)}-point beta sweep, total wall", ours_total, sweep_best, "s", "<= 0.5",
            f"TRL best sweep: {_described(sweep_mode, configs)}, shared datasets cache"),
    ]  # fmt: skip
    hits = [j["wall"] for s in res["prefops"] for j in s[1:]]
    exports = [j["export"] for s in res["prefops"] for j in s]
    notes = [
        shape.describe(),
        f"prompt/completion ratio {ratio_label(ratio)} asked: mean prompt {data['prompt']:.0f} tokens, mean "
        f"completion {data['completion']:.0f} tokens: measured ratio {data['ratio']:.2f}",
        f"{shape.pairs} pairs x 1 epoch ({shape.pairs // shape.batch} steps), LoRA r=16 all-linear, lr {LEARNING_RATE}",
        "TRL, median wall: " + "; ".join(
            f"{m}: first job {statistics.median(first[m]):.1f} s, sweep {statistics.median(totals[m]):.1f} s "
            f"({_described(m, configs)})" for m in MODES),
        "TRL tuning (one job each, wall s): " + "; ".join(
            f"{m}: {json.dumps(configs[m]['tuning_walls'])}" for m in MODES),
        f"prefops job wall, median: cache miss {statistics.median(ours_first):.1f} s, cache hit "
        f"{statistics.median(hits):.1f} s; export (merge, card, checksums, curves; timed apart, not counted) "
        f"{statistics.median(exports):.1f} s; each job a fresh datasets cache (a pod)",
        f"betas {', '.join(map(str, BETAS))} on both sides",
    ]  # fmt: skip
    print_table(f"One job and a beta sweep at prompt/completion {ratio_label(ratio)}: prefops / TRL at its best",
                rows, notes)  # fmt: skip
    return rows


def _described(mode: str, configs: dict) -> str:
    c = configs[mode]
    reference = "reference online" if mode == "online" else f"precompute (batch {c['ref_batch']})"
    return f"{reference}, {c['sampler']} sampler"


if __name__ == "__main__":
    main()
