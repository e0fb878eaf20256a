"""Benchmark: the reference pass and the training phase, prefops against TRL at its best, at each prompt/completion
length ratio (0.3, 1, 2, 3: prefix sharing saves the prompt's second pass, so its gain grows with the ratio).

Rows, at each ratio (each job a separate process with a fresh datasets cache, the kinds interleaved over the
repetitions):

* reference pass, pairs/s: the prefops precompute phase (packed pairs, token-budget batches) against TRL's own
  ``precompute_ref_log_probs`` pass at its best ``precompute_ref_batch_size`` on this machine (tuned first: one
  pass at each candidate size, the fastest kept); both timed from the first batch to the written result (our Parquet
  shard, TRL's Arrow cache file), model loading and tokenization excluded on both sides.
* training, optimizer steps/s: the prefops train phase (reference log-probs from the cache) against TRL with
  ``precompute_ref_log_probs=True`` (its fastest training: no reference model), full fine-tuning, same model, data,
  dtype, maxLength, batch, seed, learning rate, logging every step, and the same gradient checkpointing setting
  (explicit on both sides: TRL 1.16 turns it on by default). TRL runs twice, with its random sampler and with
  ``train_sampling_strategy="group_by_length"`` (length-sorted batches, less padding; it needs a ``length`` column
  and ``remove_unused_columns=False``): the faster is the baseline. prefops runs ``training.groupByLength`` (the same
  sampler over its rows' token lengths; ``lib.common.prefops_job``). Rate over the whole pass (first step to last):
  the two samplers order the rows differently, so a warm-up cut would skip different batches.
* training, peak RSS: the same jobs' peak resident memory from the first training step on, against the TRL variant
  that is the speed baseline.
* sharded reference pass: 2 shards in 2 processes against 1 process, each process pinned to a core of its own with
  one thread, as each shard would have a device of its own; wall time from launch to every shard written.

    python bench/trainer_step.py [--quick] [--reps 3] [--steps 16] [--ratios 0.3 1 2 3] [--gradient-checkpointing]
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
    RATIOS,
    Row,
    Shape,
    best_of,
    build_assets,
    fresh_env,
    interleaved,
    peak_rss_mb,
    peak_rss_reset,
    prefops_job,
    print_ratio_summary,
    print_table,
    ratio_label,
    run,
    start,
    write_job,
)

SHARD_DATA = "pairs-shards.jsonl"
#: TRL's ``precompute_ref_batch_size`` candidates; the fastest on this machine is its baseline.
TRL_REF_BATCHES = (4, 8, 16, 32)
SAMPLERS = ("random", "group_by_length")


def step_clock():
    """A Trainer callback: peak RSS reset when training begins; when the first step began and each step ended."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.begin: float | None = None
            self.ends: list[float] = []
            self.peak_mb = 0.0

        def on_train_begin(self, args, state, control, **kw):
            peak_rss_reset()

        def on_step_begin(self, args, state, control, **kw):
            if self.begin is None:
                self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kw):
            self.peak_mb = peak_rss_mb()

        def result(self) -> dict:
            assert self.begin is not None
            return {
                "steps": len(self.ends),
                "steps_per_s": len(self.ends) / (self.ends[-1] - self.begin),
                "peak_rss_mb": self.peak_mb,
            }

    return Clock()


def trl_config(root: Path, shape: Shape, steps: int, sampling: str, ref_batch: int):
    from trl import DPOConfig

    grouped = sampling == "group_by_length"
    return DPOConfig(
        output_dir=str(root / "trl-out"),
        max_steps=steps,
        per_device_train_batch_size=shape.batch,
        learning_rate=1e-5,
        beta=0.1,
        max_length=shape.max_length,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=ref_batch,
        gradient_checkpointing=shape.gradient_checkpointing,
        train_sampling_strategy=sampling,
        remove_unused_columns=not grouped,  # the sampler reads the length column
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


def trl_trainer(root: Path, shape: Shape, steps: int, *, rows=None, sampling="random", ref_batch=8, **kwargs):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    data = datasets.load_dataset("json", data_files=str(root / "pairs.jsonl"), split="train")
    data = data.select(range(rows)) if rows else data
    tok = AutoTokenizer.from_pretrained(root / "model")
    if sampling == "group_by_length":
        data = data.map(lambda r: {"length": pair_tokens(tok, r)})
    model = AutoModelForCausalLM.from_pretrained(root / "model", dtype=torch.float32, attn_implementation="sdpa")
    args = trl_config(root, shape, steps, sampling, ref_batch)
    return DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, **kwargs)


def pair_tokens(tok, row: dict) -> int:
    """The longer side of a pair, in tokens: what TRL's collator pads a batch to."""
    prompt = len(tok(row["prompt"])["input_ids"])
    return prompt + max(len(tok(row[k])["input_ids"]) for k in ("chosen", "rejected")) + 1


def worker(kind: str, root: Path, shape: Shape, steps: int, storage: Path, option: str) -> dict:
    """One job, in its own process. ``option``: TRL's precompute batch size, or its sampler."""
    from prefops_trainer.core.spec import parse_job
    from prefops_trainer.inputs import load_inputs
    from prefops_trainer.phases import precompute as pre_phase
    from prefops_trainer.phases import train as train_phase
    from prefops_trainer.phases.train import trainers

    name = f"{kind.replace('/', '-')}-{time.monotonic_ns()}"
    if kind == "reference/prefops":
        inputs = load_inputs(parse_job(prefops_job(root, shape, name, root / name)))  # a storage of its own: a miss
        timed = _timed(pre_phase, "_compute_shard")
        pre_phase.run(inputs)
        return {"pairs_per_s": len(inputs.splits["train"]) / timed["seconds"]}
    if kind == "reference/trl":
        from trl import DPOTrainer

        timed = _timed(DPOTrainer, "_precompute_ref_logps")
        trainer = trl_trainer(root, shape, steps, ref_batch=int(option))
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
        rows = train_rows(shape, steps)["maxSamples"]
        trainer = trl_trainer(root, shape, steps, rows=rows, sampling=option, callbacks=[clock])
        assert trainer.ref_model is None, "TRL with precompute keeps no reference model"
        assert trainer.args.gradient_checkpointing == shape.gradient_checkpointing
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


def job_argv(kind: str, root: Path, args, shape: Shape, option: str = "") -> list[str]:
    return [sys.executable, __file__, "--worker", kind, "--option", option, "--root", str(root),
            "--steps", str(args.steps), *_shape_args(shape)]  # fmt: skip


def _shape_args(shape: Shape) -> list[str]:
    return ["--pairs", str(shape.pairs), "--hidden", str(shape.hidden), "--layers", str(shape.layers),
            "--prompt-mean", str(shape.prompt_mean), "--completion-mean", str(shape.completion_mean),
            *(["--gradient-checkpointing"] if shape.gradient_checkpointing else [])]  # fmt: skip


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


def tune_trl_reference_batch(root: Path, args, shape: Shape, candidates: tuple[int, ...]) -> tuple[int, dict]:
    """TRL's fastest ``precompute_ref_batch_size`` here: one reference pass at each candidate."""
    rates = {}
    for batch in candidates:
        rates[batch] = run(job_argv("reference/trl", root, args, shape, str(batch)), fresh_env(root)).result
        print(f"  tune TRL precompute batch {batch}: {json.dumps(rates[batch])}", file=sys.stderr, flush=True)
    best = max(rates, key=lambda b: rates[b]["pairs_per_s"])
    return best, {b: round(r["pairs_per_s"], 2) for b, r in rates.items()}


def measure(root: Path, args, shape: Shape) -> tuple[dict, dict, dict]:
    """Every kind at one ratio: (assets' lengths, results by kind, TRL's tuning)."""
    data = build_assets(root, shape, larger={SHARD_DATA: args.shard_pairs})
    # the training jobs read one cache, written here once (untimed)
    setup = write_job(root, prefops_job(root, shape, "setup", root / "work", dataset=train_rows(shape, args.steps)))
    run([sys.executable, "-m", "prefops_trainer", "precompute", str(setup)], fresh_env(root))
    ref_batch, tuning = tune_trl_reference_batch(root, args, shape, args.trl_ref_batches)
    jobs = {
        "reference/prefops": ("reference/prefops", ""),
        "reference/trl": ("reference/trl", str(ref_batch)),
        "train/prefops": ("train/prefops", ""),
        **{f"train/trl-{s}": ("train/trl", s) for s in SAMPLERS},
    }
    kinds = [*jobs, "shards/1", "shards/2"]
    res: dict[str, list[dict]] = {k: [] for k in kinds}
    for rep, kind in interleaved(args.reps, kinds):
        if kind.startswith("shards/"):
            res[kind].append({"pairs_per_s": sharded_pass(root, shape, int(kind[-1]), rep, args.shard_pairs)})
        else:
            res[kind].append(run(job_argv(jobs[kind][0], root, args, shape, jobs[kind][1]), fresh_env(root)).result)
        print(f"  rep {rep + 1} {kind}: {json.dumps(res[kind][-1])}", file=sys.stderr, flush=True)
    return data, res, {"batch": ref_batch, "pairs_per_s": tuning}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small smoke run (numbers mean little)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--pairs", type=int, default=256, help="pairs of the reference-pass rows")
    p.add_argument("--shard-pairs", type=int, default=1024, help="pairs of the sharded-pass rows")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="prompt/completion length ratios")
    p.add_argument("--gradient-checkpointing", action="store_true", help="on for both sides (default: off for both)")
    p.add_argument("--trl-ref-batches", type=int, nargs="+", default=list(TRL_REF_BATCHES))
    p.add_argument("--worker")
    p.add_argument("--option", default="")
    p.add_argument("--root", type=Path)
    p.add_argument("--prompt-mean", type=int)
    p.add_argument("--completion-mean", type=int)
    args = p.parse_args()
    if args.quick:
        args.reps, args.steps, args.pairs, args.shard_pairs, args.hidden, args.layers = 1, 6, 24, 48, 128, 2
        args.trl_ref_batches = [4, 8]
    base = {"hidden": args.hidden, "layers": args.layers, "pairs": args.pairs,
            "gradient_checkpointing": args.gradient_checkpointing}  # fmt: skip
    if args.worker:
        shape = Shape(prompt_mean=args.prompt_mean, completion_mean=args.completion_mean, **base)
        print(json.dumps(worker(args.worker, args.root, shape, args.steps, args.root / "work", args.option)))
        return
    tables, measured = {}, {}
    for ratio in args.ratios:
        shape = Shape.at_ratio(ratio, **base)
        with tempfile.TemporaryDirectory(prefix=f"prefops-bench-step-{ratio_label(ratio)}-") as tmp:
            data, res, tuning = measure(Path(tmp), args, shape)
        tables[ratio], measured[ratio] = report(args, shape, ratio, data, res, tuning), data["ratio"]
    print_ratio_summary("Reference pass and training phase: prefops / TRL at its best, by prompt/completion ratio",
                        tables, measured)  # fmt: skip


def report(args, shape: Shape, ratio: float, data: dict, res: dict[str, list[dict]], tuning: dict) -> list[Row]:
    def col(kind: str, key: str) -> list[float]:
        return [r[key] for r in res[kind]]

    sampler, trl_steps = best_of({s: col(f"train/trl-{s}", "steps_per_s") for s in SAMPLERS}, higher_is_better=True)
    trl_train = f"TRL with precompute, {sampler} sampler"
    rows = [
        Row("reference pass, pairs/s", col("reference/prefops", "pairs_per_s"), col("reference/trl", "pairs_per_s"),
            "pairs/s", ">= 2.0", f"TRL's own precompute pass, batch {tuning['batch']}"),
        Row("training phase, optimizer steps/s", col("train/prefops", "steps_per_s"), trl_steps, "steps/s", ">= 1.25",
            trl_train),
        Row("training phase, peak RSS", col("train/prefops", "peak_rss_mb"), col(f"train/trl-{sampler}", "peak_rss_mb"),
            "MB", "<= 1.0", trl_train),
        Row("sharded reference pass, pairs/s", col("shards/2", "pairs_per_s"), col("shards/1", "pairs_per_s"),
            "pairs/s", ">= 1.7", "prefops, 1 process"),
    ]  # fmt: skip
    medians = {s: f"{statistics.median(col(f'train/trl-{s}', 'steps_per_s')):.3f}" for s in SAMPLERS}
    notes = [
        shape.describe(),
        f"prompt/completion ratio {ratio_label(ratio)} asked; {shape.pairs} pairs, mean prompt {data['prompt']:.0f} "
        f"tokens, mean completion {data['completion']:.0f} tokens: measured ratio {data['ratio']:.2f}",
        f"TRL precompute_ref_batch_size tuned over {', '.join(map(str, args.trl_ref_batches))}: pairs/s "
        f"{tuning['pairs_per_s']} -> {tuning['batch']}; prefops: reference.batchSize {shape.reference_batch} "
        "(token budget batchSize x maxLength, its default)",
        f"training: full fine-tuning, {args.steps} steps over the first {args.steps * shape.batch} pairs, rate over "
        "the whole pass, logging every step, same seed; prefops with prefix sharing (spec default) and "
        "training.groupByLength (the same length-grouped sampler); "
        f"TRL steps/s medians by sampler: {medians} (the faster is the baseline)",
        f"sharded pass: {args.shard_pairs} pairs; each process pinned to one core with one thread (a device of its "
        "own); wall from launch to the last shard written, start-up included",
    ]
    print_table(f"Reference pass and training phase at prompt/completion {ratio_label(ratio)}: prefops / TRL at its "
                "best", rows, notes)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
