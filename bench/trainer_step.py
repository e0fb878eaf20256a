"""Benchmark: the reference pass and the training phase, prefops against TRL at its best.

Rows (each job a separate process with a fresh datasets cache, the kinds interleaved over the repetitions):

* reference pass, pairs/s: the prefops precompute phase (packed pairs, token-budget batches) against TRL's own
  ``precompute_ref_log_probs`` pass with the same precompute batch size; both timed from the first batch to the
  written result (our Parquet shard, TRL's Arrow cache file), model loading and tokenization excluded on both sides.
* training, optimizer steps/s: the prefops train phase (reference log-probs from the cache) against TRL with
  ``precompute_ref_log_probs=True`` (its fastest training: no reference model), full fine-tuning, same model, data,
  dtype, maxLength, batch, seed, learning rate, logging every step; steady state after two warm-up steps.
* training, peak RSS: the same two jobs' peak resident memory from the first training step on (the peak is reset
  when training begins, so TRL's precompute pass and our cache check before it do not count).
* sharded reference pass: 2 shards in 2 processes against 1 process, each process pinned to a core of its own with
  one thread, as each shard would have a device of its own; wall time from launch to every shard written.

    python bench/trainer_step.py [--quick] [--reps 3] [--steps 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib.common import (
    Row,
    Shape,
    build_assets,
    fresh_env,
    interleaved,
    peak_rss_mb,
    peak_rss_reset,
    prefops_job,
    print_table,
    run,
    start,
    write_job,
)

WARMUP_STEPS = 2
SHARD_DATA = "pairs-shards.jsonl"


def step_clock():
    """A Trainer callback: peak RSS reset when training begins, a timestamp after every optimizer step."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.peak_mb = 0.0

        def on_train_begin(self, args, state, control, **kw):
            peak_rss_reset()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kw):
            self.peak_mb = peak_rss_mb()

        def result(self) -> dict:
            steady = self.ends[WARMUP_STEPS:]
            return {
                "steps": len(self.ends),
                "steps_per_s": (len(steady) - 1) / (steady[-1] - steady[0]),
                "peak_rss_mb": self.peak_mb,
            }

    return Clock()


def trl_config(root: Path, shape: Shape, steps: int):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(root / "trl-out"),
        max_steps=steps,
        per_device_train_batch_size=shape.batch,
        learning_rate=1e-5,
        beta=0.1,
        max_length=shape.max_length,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=shape.reference_batch,
        seed=42,
        data_seed=42,
        logging_steps=1,
        logging_first_step=True,
        save_strategy="no",
        report_to=[],
        bf16=False,
        use_cpu=True,
        disable_tqdm=True,
    )


def trl_trainer(root: Path, shape: Shape, steps: int, rows: int | None = None, **kwargs):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    data = datasets.load_dataset("json", data_files=str(root / "pairs.jsonl"), split="train")
    data = data.select(range(rows)) if rows else data
    model = AutoModelForCausalLM.from_pretrained(root / "model", dtype=torch.float32, attn_implementation="sdpa")
    tok = AutoTokenizer.from_pretrained(root / "model")
    return DPOTrainer(
        model=model, args=trl_config(root, shape, steps), train_dataset=data, processing_class=tok, **kwargs
    )


def worker(kind: str, root: Path, shape: Shape, steps: int, storage: Path) -> dict:
    """One job, in its own process."""
    from prefops_trainer.core.spec import parse_job
    from prefops_trainer.inputs import load_inputs
    from prefops_trainer.phases import precompute as pre_phase
    from prefops_trainer.phases import train as train_phase
    from prefops_trainer.phases.train import trainers

    name = f"{kind}-{time.monotonic_ns()}"
    if kind == "reference/prefops":
        inputs = load_inputs(parse_job(prefops_job(root, shape, name, root / name)))  # a storage of its own: a miss
        timed = _timed(pre_phase, "_compute_shard")
        pre_phase.run(inputs)
        return {"pairs_per_s": len(inputs.splits["train"]) / timed["seconds"]}
    if kind == "reference/trl":
        from trl import DPOTrainer

        timed = _timed(DPOTrainer, "_precompute_ref_logps")
        trainer = trl_trainer(root, shape, steps)
        return {"pairs_per_s": len(trainer.train_dataset) / timed["seconds"]}
    clock = step_clock()
    if kind == "train/prefops":
        job = prefops_job(root, shape, name, storage, training={"maxSteps": steps}, dataset=train_rows(shape, steps))
        inputs = load_inputs(parse_job(job))
        original = trainers.build

        def build(*args, **kwargs):
            trainer = original(*args, **kwargs)
            trainer.add_callback(clock)
            return trainer

        trainers.build = build
        train_phase.run(inputs)
    else:
        trainer = trl_trainer(root, shape, steps, train_rows(shape, steps)["maxSamples"], callbacks=[clock])
        assert trainer.ref_model is None, "TRL with precompute keeps no reference model"
        trainer.train()
    return clock.result()


def train_rows(shape: Shape, steps: int) -> dict:
    """The training jobs read the first ``steps x batch`` rows: one pass, the same rows on both sides (and TRL's
    precompute before training covers only them)."""
    return {"maxSamples": steps * shape.batch}


def _timed(owner, method: str) -> dict:
    """Wrap ``owner.method`` to record how long its (single) call took."""
    original, timing = getattr(owner, method), {}

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        timing["seconds"] = time.perf_counter() - t0
        return out

    setattr(owner, method, wrapper)
    return timing


def job_argv(kind: str, root: Path, args) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--root",
        str(root),
        "--steps",
        str(args.steps),
        *_shape_args(args),
    ]


def _shape_args(args) -> list[str]:
    return ["--pairs", str(args.pairs), "--hidden", str(args.hidden), "--layers", str(args.layers)]


def sharded_pass(root: Path, shape: Shape, shards: int, rep: int, pairs: int) -> float:
    """Pairs/s of a whole reference pass over ``pairs`` pairs in ``shards`` processes, one core and one thread each."""
    storage = root / f"shards-{shards}-{rep}"
    doc = prefops_job(root, shape, f"shards-{shards}-{rep}", storage, reference={"workers": shards},
                      dataset={"source": str(root / SHARD_DATA)})  # fmt: skip
    job = write_job(root, doc)
    env = fresh_env(root, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    procs = [
        start([sys.executable, "-m", "prefops_trainer", "precompute", str(job), "--shard", str(i)], env, cpus={i})
        for i in range(shards)
    ]
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode:
            sys.stderr.write(err[-3000:])
            raise SystemExit("a precompute shard failed")
    wall = time.perf_counter() - t0
    assert next(storage.rglob("manifest.json")), "every shard written, the cache complete"
    return pairs / wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small smoke run (numbers mean little)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--pairs", type=int, default=256, help="pairs of the reference-pass rows")
    p.add_argument("--shard-pairs", type=int, default=1024, help="pairs of the sharded-pass rows")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--worker")
    p.add_argument("--root", type=Path)
    args = p.parse_args()
    if args.quick:
        args.reps, args.steps, args.pairs, args.shard_pairs, args.hidden, args.layers = 1, 6, 24, 48, 128, 2
    shape = Shape(hidden=args.hidden, layers=args.layers, pairs=args.pairs)
    if args.worker:
        print(json.dumps(worker(args.worker, args.root, shape, args.steps, args.root / "work")))
        return
    with tempfile.TemporaryDirectory(prefix="prefops-bench-step-") as tmp:
        root = Path(tmp)
        data = build_assets(root, shape, larger={SHARD_DATA: args.shard_pairs})
        # the training jobs read one cache, written here once (untimed)
        setup = write_job(root, prefops_job(root, shape, "setup", root / "work", dataset=train_rows(shape, args.steps)))
        run([sys.executable, "-m", "prefops_trainer", "precompute", str(setup)], fresh_env(root))
        kinds = ["reference/prefops", "reference/trl", "train/prefops", "train/trl", "shards/1", "shards/2"]
        res: dict[str, list[dict]] = {k: [] for k in kinds}
        for rep, kind in interleaved(args.reps, kinds):
            if kind.startswith("shards/"):
                res[kind].append({"pairs_per_s": sharded_pass(root, shape, int(kind[-1]), rep, args.shard_pairs)})
            else:
                res[kind].append(run(job_argv(kind, root, args), fresh_env(root)).result)
            print(f"  rep {rep + 1} {kind}: {json.dumps(res[kind][-1])}", file=sys.stderr, flush=True)
    report(args, shape, data, res)


def report(args, shape: Shape, data: dict, res: dict[str, list[dict]]) -> None:
    def col(kind: str, key: str) -> list[float]:
        return [r[key] for r in res[kind]]

    rows = [
        Row("reference pass, pairs/s", col("reference/prefops", "pairs_per_s"), col("reference/trl", "pairs_per_s"),
            "pairs/s", ">= 2.0", "TRL's own precompute pass"),
        Row("training phase, optimizer steps/s", col("train/prefops", "steps_per_s"), col("train/trl", "steps_per_s"),
            "steps/s", ">= 1.25", "TRL with precompute"),
        Row("training phase, peak RSS", col("train/prefops", "peak_rss_mb"), col("train/trl", "peak_rss_mb"),
            "MB", "<= 1.0", "TRL with precompute"),
        Row("sharded reference pass, pairs/s", col("shards/2", "pairs_per_s"), col("shards/1", "pairs_per_s"),
            "pairs/s", ">= 1.7", "prefops, 1 process"),
    ]  # fmt: skip
    notes = [
        shape.describe(),
        f"{shape.pairs} pairs; mean prompt {data['prompt']:.0f} tokens, mean completion {data['completion']:.0f} "
        f"tokens: prompt/completion length ratio {data['ratio']:.2f}",
        f"training: full fine-tuning, {args.steps} steps over the first {args.steps * shape.batch} pairs "
        f"(rate over the steps after {WARMUP_STEPS} warm-up steps), "
        "logging every step, same seed; prefops with prefix sharing (spec default)",
        f"sharded pass: {args.shard_pairs} pairs; each process pinned to one core with one thread (a device of its "
        "own); wall from launch to the last shard written, start-up included",
        f"steps/s medians: prefops {statistics.median(col('train/prefops', 'steps_per_s')):.3f}, "
        f"TRL {statistics.median(col('train/trl', 'steps_per_s')):.3f}",
    ]
    print_table("Reference pass and training phase: prefops / TRL at its best", rows, notes)


if __name__ == "__main__":
    main()
