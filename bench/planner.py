"""Benchmark: the memory planner's accuracy. The plan of the training phase against the peak it really allocates.

For three model sizes (random Llama-style models built here: no download) and several configurations (LoRA and
full fine-tuning, micro-batch, maxLength, gradient checkpointing, prefix sharing on and off, float32 and bfloat16),
each configuration runs the trainer's own train phase for two optimizer steps in a process of its own, under
``torch.profiler``'s memory profiling: the peak of torch's CPU allocator running total is the measured total, and
each component is measured where it lives (``bench/lib/memory.py``). The data is the plan's worst case: short
prompts and completions that fill ``maxLength``, so every row of every batch is as long as it may be.

Printed: per configuration, each component planned, measured and the error, and the total; then the error's
median and worst over every configuration. Goal: every total within +-15%.

    python bench/planner.py [--quick] [--sizes S,M,L] [--only NAME]
    python bench/planner.py --one CONFIG.json      # one measurement, printed as JSON (what the runs call)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib.common import QUIET_ENV, ROOT, machine

SIZES = {  # name: (model_type, hidden, layers, heads, kv heads, intermediate, vocab)
    "S": ("llama", 256, 4, 4, 2, 688, 8192),
    "M": ("llama", 512, 8, 8, 4, 1376, 16384),
    "L": ("llama", 768, 12, 12, 4, 2048, 32000),
    "Qwen0.5B": ("qwen2", 896, 24, 14, 2, 4864, 151936),  # Qwen2.5-0.5B's shape (GPU runs)
}
PROMPT = 8  # tokens: the worst case for the plan is a short prompt and completions that fill maxLength


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    name: str
    size: str = "S"
    lora: bool = True
    batch: int = 2
    max_length: int = 256
    checkpointing: bool = False
    prefix_sharing: bool = True
    dtype: str = "float32"
    algorithm: str = "dpo"
    accumulation: int = 1
    gpu: bool = False
    precompute: bool = True

    def describe(self) -> str:
        mode = "LoRA" if self.lora else "full"
        gc = ", GC" if self.checkpointing else ""
        ps = "" if self.prefix_sharing or self.algorithm != "dpo" else ", TRL layout"
        acc = f"x{self.accumulation}" if self.accumulation > 1 else ""
        ref = "" if self.precompute else ", reference model"
        return (f"{self.algorithm} {self.size} {mode} {self.dtype[:4]} B{self.batch}{acc} L{self.max_length}"
                f"{gc}{ps}{ref}")  # fmt: skip


CONFIGS = [
    Config("lora"),
    Config("full", lora=False),
    Config("lora-batch4", batch=4),
    Config("lora-len512", max_length=512),
    Config("lora-gc", checkpointing=True),
    Config("lora-trl-layout", prefix_sharing=False),
    Config("full-gc-trl-layout", lora=False, checkpointing=True, prefix_sharing=False),
    Config("full-accum2", lora=False, accumulation=2),
    Config("lora-bf16", dtype="bfloat16"),
    Config("full-bf16", lora=False, dtype="bfloat16"),
]
QUICK = ["lora", "full", "lora-gc"]


def model_config(size: str, max_length: int) -> dict:
    model_type, hidden, layers, heads, kv, inter, vocab = SIZES[size]
    return {
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "max_position_embeddings": 4 * max_length,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }


def build(root: Path, c: Config) -> Path:
    """A random model of size ``c.size`` with a word-level tokenizer, worst-case pairs, and the job manifest."""
    import random

    import torch
    import yaml
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(512)]
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    torch.manual_seed(0)
    config = model_config(c.size, c.max_length)
    model_type = config.pop("model_type")
    AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config)).save_pretrained(root / "model")
    fast.save_pretrained(root / "model")
    rng = random.Random(0)
    steps = 2
    rows = c.batch * c.accumulation * steps
    with (root / "pairs.jsonl").open("w") as f:
        for _ in range(rows):
            text = [" ".join(rng.choice(words) for _ in range(n)) for n in (PROMPT, c.max_length, c.max_length)]
            f.write(json.dumps({"prompt": text[0], "chosen": " " + text[1], "rejected": " " + text[2]}) + "\n")
    job = {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": f"plan-{c.name}"},
        "spec": spec(root, c, steps),
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def spec(root: Path, c: Config, steps: int) -> dict:
    model: dict = {"source": str(root / "model"), "dtype": c.dtype, "attnImplementation": "sdpa"}
    if c.lora:
        model["lora"] = {"r": 16, "alpha": 32, "dropout": 0.0, "targetModules": ["all-linear"]}
    return {
        "model": model,
        "dataset": {"source": str(root / "pairs.jsonl"), "maxLength": c.max_length},
        "algorithm": {"name": c.algorithm},
        "training": {
            "maxSteps": steps,
            "learningRate": 1e-5,
            "perDeviceBatchSize": c.batch,
            "gradientAccumulation": c.accumulation,
            "gradientCheckpointing": c.checkpointing,
            "prefixSharing": c.prefix_sharing,
            "checkpointEverySteps": 10**6,
        },
        "reference": {"batchSize": c.batch, "precompute": c.precompute},
        "resources": {"gpusPerNode": 1 if c.gpu else 0},
        "output": {"uri": str(root / "out")},
        "storage": {"uri": str(root / "work")},
    }


def measure_one(c: Config) -> dict:
    """Run the train phase of ``c`` here under the profiler; planned and measured components, as a dict."""
    import torch
    from lib.memory import Measured, Probe, allocator_summary, cuda_head_rises, marked_head

    from prefops_trainer.adapters.jobfile import load_job
    from prefops_trainer.inputs import load_inputs
    from prefops_trainer.phases import precompute, train
    from prefops_trainer.phases.train import trainers

    root = Path(tempfile.mkdtemp(prefix="prefops-planbench-"))
    os.environ["PREFOPS_CACHE_DIR"] = str(root / "cache")
    job = load_job(build(root, c))
    inputs = load_inputs(job)
    if job.spec.precompute:
        precompute.run(inputs)
    measured = Measured()
    build_trainer = trainers.build

    def instrumented(*args: object, **kwargs: object) -> object:
        trainer = build_trainer(*args, **kwargs)
        Probe(measured).attach(trainer)
        return trainer

    trainers.build = instrumented  # type: ignore[assignment]
    if c.gpu:
        torch.cuda.reset_peak_memory_stats()
        with cuda_head_rises(measured):
            train.run(inputs)
        measured.peak = max(measured.extras.pop("peak_before_resets", 0), torch.cuda.max_memory_allocated())
        measured.extras["reserved"] = torch.cuda.max_memory_reserved()
        gpu_memory = torch.cuda.get_device_properties(0).total_memory
    else:
        activities = [torch.profiler.ProfilerActivity.CPU]
        with marked_head(), torch.profiler.profile(activities=activities, profile_memory=True) as prof:
            train.run(inputs)
        allocator_summary(prof, measured)
        gpu_memory = None
    return {"config": asdict(c), "planned": planned(job, gpu_memory), "measured": asdict(measured)}


def planned(job: object, gpu_memory: int | None = None) -> dict:
    """The plan's training components, and the parts the bench measures apart (saved activations, head). On a GPU
    the total compared with ``max_memory_allocated`` leaves out what the allocator never counts (the CUDA context)
    and its fragmentation: both are in the plan's ``overhead``, reported beside."""
    from prefops_trainer.core.planner import terms
    from prefops_trainer.core.planner.phases import training_device
    from prefops_trainer.planning import plan_from_job

    plan = plan_from_job(job, f"{gpu_memory}" if gpu_memory else None)  # type: ignore[arg-type]
    s = terms.setup(plan.job, plan.shape)
    mb = terms.training_batch(plan.job)
    device = training_device(s, None)
    copies = 0 if plan.job.checkpointing else plan.shape.layers  # at the forward's end: none are recomputing
    mask_copies = copies * mb.rows * mb.seq * mb.seq * s.bytes if mb.packed and mb.masked else 0
    return {
        "components": device.components,
        "total": device.total - device.components["overhead"],
        "overhead": device.components["overhead"],
        "peakAt": device.peak_at,
        "saved": terms.saved_activations(s, mb) + mask_copies,
        "head": terms.logits(s, mb),
        "weights": terms.weights(s),
        "adapters": s.trainable * s.adapter_bytes if s.lora else 0,
        "gradients": terms.gradients(s, at_step=False),
        "optimizer": terms.optimizer_states(s),
    }


def error(plan: float, real: float) -> float | None:
    return None if real == 0 else (plan - real) / real * 100


def run_config(c: Config, script: str = __file__) -> dict:
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "trainer" / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(asdict(c), f)
    out = subprocess.run([sys.executable, script, "--one", f.name], env=env, capture_output=True, text=True,
                         timeout=3600, check=False)  # fmt: skip
    os.unlink(f.name)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{c.name}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


ROWS = [  # (row, planned key, measured key)
    ("weights", "weights", "weights"),
    ("LoRA adapters", "adapters", "adapters"),
    ("gradients", "gradients", "gradients"),
    ("optimizer states", "optimizer", "optimizer"),
    ("saved activations (+ packed mask copies)", "saved", "saved"),
    ("LM head working set", "head", "head"),
    ("total: peak allocated", "total", "peak"),
]


def rows_of(result: dict) -> list[tuple[str, int, int, float | None]]:
    p, m = result["planned"], result["measured"]
    head = max(m["head_forward"], m["head_backward"])
    out = []
    for name, pk, mk in ROWS:
        real = head if mk == "head" else m[mk]
        if p[pk] or real:
            out.append((name, p[pk], real, error(p[pk], real)))
    return out


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def print_results(results: list[dict], where: str = "CPU, torch's allocator counter") -> None:
    print(f"\n### Planner accuracy: plan against the train phase's measured peak ({where})\n")
    print("| configuration | component | planned MiB | measured MiB | error |")
    print("|---|---|---|---|---|")
    totals = []
    for r in results:
        c = Config(**r["config"])
        for name, plan, real, err in rows_of(r):
            e = "n/a" if err is None else f"{err:+.1f}%"
            bold = "**" if name.startswith("total") else ""
            print(f"| {c.describe()} | {bold}{name}{bold} | {mib(plan)} | {mib(real)} | {bold}{e}{bold} |")
            if name.startswith("total") and err is not None:
                totals.append(err)
    print_summary(results)
    if totals:
        worst = max(totals, key=abs)
        within = sum(abs(e) <= 15 for e in totals)
        print(f"\ntotal error over {len(totals)} configurations: median {statistics.median(totals):+.1f}%, worst "
              f"{worst:+.1f}%, {within} of {len(totals)} within +-15%")  # fmt: skip
    print(f"{machine()}")


def print_summary(results: list[dict]) -> None:
    """The error of each component over every configuration: median (min to max)."""
    errors: dict[str, list[float]] = {}
    for r in results:
        for name, _, _, err in rows_of(r):
            if err is not None:
                errors.setdefault(name, []).append(err)
    print("\n| component | configurations | error, median (min to max) |")
    print("|---|---|---|")
    for name, errs in errors.items():
        print(f"| {name} | {len(errs)} | {statistics.median(errs):+.1f}% ({min(errs):+.1f}% to {max(errs):+.1f}%) |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"size S, configurations {', '.join(QUICK)}")
    p.add_argument("--sizes", default="S,M,L")
    p.add_argument("--only", default=None, help="comma-separated configuration names")
    p.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="also write every result to this file")
    p.add_argument("--from-json", type=Path, help="print the tables of results written by --json, measuring nothing")
    args = p.parse_args()
    if args.from_json:
        print_results(json.loads(args.from_json.read_text()))
        return 0
    if args.one:
        print(json.dumps(measure_one(Config(**json.loads(args.one.read_text())))))
        return 0
    names = QUICK if args.quick else (args.only.split(",") if args.only else [c.name for c in CONFIGS])
    sizes = ["S"] if args.quick else args.sizes.split(",")
    configs = [replace(c, size=s) for s in sizes for c in CONFIGS if c.name in names]
    results = []
    for c in configs:
        print(f"measuring {c.describe()} ...", file=sys.stderr, flush=True)
        results.append(run_config(c))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
