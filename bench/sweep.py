"""Benchmark: one DPO job end to end, and a 4-point beta sweep, prefops against TRL at its best.

Per repetition (kinds interleaved, each job its own process with a fresh datasets cache, as a pod would be):

* TRL, reference online: a script that loads the model and data, trains one epoch with LoRA (the reference is the
  model with its adapter disabled, one more forward per micro-batch), and saves the adapter.
* TRL, ``precompute_ref_log_probs=True`` (same precompute batch size as ours): the same, with TRL's own
  reference pass before training.
* prefops: four ``prefops-trainer run`` jobs with beta 0.05, 0.1, 0.2, 0.5 sharing one storage: the first computes
  the reference log-probs (a cache miss), the other three find them (``cacheHit: true``).

The baseline is TRL's best configuration: whichever of the two TRL jobs has the lower median wall time. Both sides
save the trained adapter; our export phase (merge LoRA, model card, checksums, curves), which the TRL script does
not do, is timed apart and left out of our wall time (its seconds come from the job's own report).

Rows: one job end to end (our first, cache-miss job / TRL best); the sweep's total (our four jobs / 4 x TRL best).

    python bench/sweep.py [--quick] [--reps 3] [--pairs 192]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib.common import Row, Shape, build_assets, fresh_env, interleaved, prefops_job, print_table, run, write_job

BETAS = (0.05, 0.1, 0.2, 0.5)
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
LEARNING_RATE = 5e-4

TRL_JOB = """
import sys, datasets, torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

root, out, beta, precompute = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "precompute"
batch, reference_batch, max_length, lr = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
rows = datasets.load_dataset("json", data_files=f"{root}/pairs.jsonl", split="train")
model = AutoModelForCausalLM.from_pretrained(f"{root}/model", dtype=torch.float32, attn_implementation="sdpa")
args = DPOConfig(output_dir=out, beta=beta, num_train_epochs=1, per_device_train_batch_size=batch,
                 learning_rate=lr, max_length=max_length, precompute_ref_log_probs=precompute,
                 precompute_ref_batch_size=reference_batch, seed=42, data_seed=42, logging_steps=1, save_strategy="no",
                 report_to=[], bf16=False, use_cpu=True, disable_tqdm=True)
lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = DPOTrainer(model=model, args=args, train_dataset=rows, peft_config=lora,
                     processing_class=AutoTokenizer.from_pretrained(f"{root}/model"))
trainer.train()
trainer.save_model(out)
"""


def trl_job(root: Path, shape: Shape, mode: str, rep: int) -> float:
    out = root / "trl-out" / f"{mode}-{rep}"
    argv = [sys.executable, "-c", TRL_JOB, str(root), str(out), str(BETAS[0]), mode]
    argv += [str(shape.batch), str(shape.reference_batch), str(shape.max_length), str(LEARNING_RATE)]
    return run(argv, fresh_env(root)).wall


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small smoke run (numbers mean little)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--pairs", type=int, default=192, help="pairs: one epoch of pairs / batch optimizer steps")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    args = p.parse_args()
    if args.quick:
        args.reps, args.pairs, args.hidden, args.layers = 1, 16, 128, 2
    shape = Shape(hidden=args.hidden, layers=args.layers, pairs=args.pairs)
    res: dict[str, list] = {"trl/online": [], "trl/precompute": [], "prefops": []}
    with tempfile.TemporaryDirectory(prefix="prefops-bench-sweep-") as tmp:
        root = Path(tmp)
        data = build_assets(root, shape)
        for rep, kind in interleaved(args.reps, list(res)):
            value = our_sweep(root, shape, rep) if kind == "prefops" else trl_job(root, shape, kind[4:], rep)
            res[kind].append(value)
            print(f"  rep {rep + 1} {kind}: {json.dumps(value)}", file=sys.stderr, flush=True)
    report(args, shape, data, res)


def report(args, shape: Shape, data: dict, res: dict[str, list]) -> None:
    online, pre = res["trl/online"], res["trl/precompute"]
    best_name = "reference online" if statistics.median(online) <= statistics.median(pre) else "precompute"
    best = online if best_name == "reference online" else pre
    first = [s[0]["wall"] for s in res["prefops"]]
    total = [sum(j["wall"] for j in s) for s in res["prefops"]]
    rows = [
        Row("one job end to end (reference + training), wall", first, best, "s", "<= 0.75", f"TRL best: {best_name}"),
        Row(f"{len(BETAS)}-point beta sweep, total wall", total, [len(BETAS) * b for b in best], "s", "<= 0.5",
            f"{len(BETAS)} x TRL best: {best_name}"),
    ]  # fmt: skip
    hits = [j["wall"] for s in res["prefops"] for j in s[1:]]
    exports = [j["export"] for s in res["prefops"] for j in s]
    notes = [
        shape.describe(),
        f"{shape.pairs} pairs x 1 epoch ({shape.pairs // shape.batch} steps), LoRA r=16 all-linear, lr "
        f"{LEARNING_RATE}; mean prompt {data['prompt']:.0f} tokens, mean completion {data['completion']:.0f} tokens: "
        f"prompt/completion length ratio {data['ratio']:.2f}",
        f"TRL job wall, median: reference online {statistics.median(online):.1f} s, precompute "
        f"{statistics.median(pre):.1f} s (the faster is the baseline)",
        f"prefops job wall, median: cache miss {statistics.median(first):.1f} s, cache hit "
        f"{statistics.median(hits):.1f} s; export (merge, card, checksums, curves; timed apart, not counted) "
        f"{statistics.median(exports):.1f} s",
        f"betas {', '.join(map(str, BETAS))}; TRL runs beta {BETAS[0]} (beta does not change the work)",
    ]
    print_table("One job and a beta sweep: prefops / TRL at its best", rows, notes)


if __name__ == "__main__":
    main()
