"""What the trainer benchmarks share: a model and data built locally, jobs as separate processes, statistics, and
the table every benchmark prints.

Fairness rules every row follows (issue 12): the baseline is TRL's best configuration for the workload; both
sides get the same model, data, dtype, maxLength, batch, steps, seed and logging cadence; every job is its own
process with a fresh datasets cache; the same work on both sides (or timed apart); at least 3 repetitions,
interleaved, reported as the median and min-max of the per-repetition ratios.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

QUIET_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "TOKENIZERS_PARALLELISM": "false",
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "PREFOPS_METRICS_PORT": "off",
    "PYTHONWARNINGS": "ignore",
}


#: The prompt/completion length ratios every trainer benchmark row is measured at: prefix sharing saves the prompt's
#: second pass, so its gain grows with the ratio (issue 21).
RATIOS = (0.3, 1.0, 2.0, 3.0)
#: Mean prompt + completion tokens of one side of a pair, whatever the ratio.
PAIR_TOKENS = 288


@dataclass(frozen=True)
class Shape:
    """The benchmark's model and data. Lengths are in tokens (one word per token). ``gradient_checkpointing`` is
    set explicitly on both sides (TRL 1.16 turns it on by default, prefops leaves it off by default)."""

    hidden: int = 256
    layers: int = 4
    vocab: int = 4000
    pairs: int = 128
    prompt_mean: int = 192
    completion_mean: int = 96
    max_length: int = 512
    batch: int = 4
    reference_batch: int = 8
    gradient_checkpointing: bool = False

    @classmethod
    def at_ratio(cls, ratio: float, **kw) -> Shape:
        """Prompts and completions whose mean lengths stand at ``ratio``, :data:`PAIR_TOKENS` together."""
        prompt = round(PAIR_TOKENS * ratio / (1 + ratio))
        return cls(prompt_mean=prompt, completion_mean=PAIR_TOKENS - prompt, **kw)

    def describe(self) -> str:
        checkpointing = "on" if self.gradient_checkpointing else "off"
        return (
            f"Llama {self.hidden} hidden x {self.layers} layers (GQA), vocab {self.vocab}, float32 on CPU; "
            f"maxLength {self.max_length}, batch {self.batch}; gradient checkpointing {checkpointing} on both sides"
        )


def _length(rng: random.Random, mean: int, cap: int) -> int:
    """Log-normal lengths (sigma 0.5), as chat data has: most near the mean, a long tail."""
    return max(4, min(cap, round(rng.lognormvariate(math.log(mean) - 0.125, 0.5))))


def build_assets(root: Path, shape: Shape, seed: int = 0, larger: dict[str, int] | None = None) -> dict[str, float]:
    """A random Llama with a word-level tokenizer under ``root/model`` and ``shape.pairs`` rows in
    ``root/pairs.jsonl`` (``larger``: more files of more rows, name -> rows, the first rows the same); return the
    data's mean prompt and completion lengths (after maxLength truncation, EOS included) and their ratio."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(shape.vocab - 4)]
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=shape.hidden,
        intermediate_size=shape.hidden * 3,
        num_hidden_layers=shape.layers,
        num_attention_heads=max(1, shape.hidden // 64),
        num_key_value_heads=max(1, shape.hidden // 128),
        max_position_embeddings=2 * shape.max_length,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(root / "model")
    fast.save_pretrained(root / "model")
    rng = random.Random(seed)
    files = {"pairs.jsonl": shape.pairs, **(larger or {})}
    rows, prompts, completions = [], [], []
    for i in range(max(files.values())):
        p = _length(rng, shape.prompt_mean, 3 * shape.max_length // 4)
        c, r = (_length(rng, shape.completion_mean, shape.max_length) for _ in range(2))
        rows.append({"prompt": _text(rng, words, p), "chosen": " " + _text(rng, words, c),
                     "rejected": " " + _text(rng, words, r)})  # fmt: skip
        if i < shape.pairs:
            prompts.append(p)
            completions += [min(c + 1, shape.max_length - p), min(r + 1, shape.max_length - p)]  # + EOS, as TRL
    for name, n in files.items():
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in rows[:n]))
    mp, mc = statistics.mean(prompts), statistics.mean(completions)
    return {"prompt": mp, "completion": mc, "ratio": mp / mc}


def _text(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def prefops_job(root: Path, shape: Shape, name: str, storage: Path, **spec) -> dict:
    """A prefops job manifest on the benchmark's model and data; ``spec`` sections merge over the defaults."""
    base = {
        "model": {"source": str(root / "model"), "dtype": "float32", "attnImplementation": "sdpa"},
        "dataset": {"source": str(root / "pairs.jsonl"), "maxLength": shape.max_length},
        "algorithm": {"name": "dpo", "beta": 0.1},
        "training": {
            "learningRate": 1e-5,
            "perDeviceBatchSize": shape.batch,
            "checkpointEverySteps": 10**6,
            "logEverySteps": 1,
            "seed": 42,
            "gradientCheckpointing": shape.gradient_checkpointing,
            "groupByLength": True,  # length-grouped batches: the sampler TRL's best runs use (group_by_length)
        },
        "reference": {"batchSize": shape.reference_batch},
        "resources": {"gpusPerNode": 0},
        "output": {"uri": str(root / "out" / name)},
        "storage": {"uri": str(storage)},
    }
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value}
    return {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": name},
        "spec": base,
    }


def write_job(root: Path, doc: dict) -> Path:
    import yaml

    path = root / "jobs" / f"{doc['metadata']['name']}-{uuid.uuid4().hex[:6]}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def fresh_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of one job: its own, empty datasets cache, as a pod would have."""
    cache = root / "hf-cache" / uuid.uuid4().hex[:12]
    return {**os.environ, **QUIET_ENV, "HF_DATASETS_CACHE": str(cache), "HF_HOME": str(cache / "home"), **extra}


@dataclass
class Finished:
    wall: float
    result: dict
    stdout: str


def run(argv: list[str], env: dict[str, str], timeout: float = 3600, cpus: set[int] | None = None) -> Finished:
    """Run one job process to its end; its last stdout line, when JSON, is its result. A failure stops the
    benchmark with the job's stderr tail (a benchmark that hides a failure would report nonsense)."""
    t0 = time.perf_counter()
    proc = start(argv, env, cpus)
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(err[-4000:])
        raise SystemExit(f"benchmark job failed ({proc.returncode}): {' '.join(argv[:4])}")
    return Finished(wall, _last_json(out), out)


def start(argv: list[str], env: dict[str, str], cpus: set[int] | None = None) -> subprocess.Popen:
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pin)


def _last_json(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue  # a Trainer's printed log dict, not the result
    return {}


def interleaved(reps: int, kinds: list[str]) -> list[tuple[int, str]]:
    """Every kind once per repetition, the order rotated each time, so drift on a shared machine spreads evenly."""
    return [(r, kinds[(i + r) % len(kinds)]) for r in range(reps) for i in range(len(kinds))]


def peak_rss_reset() -> None:
    """Start a new peak-RSS window (Linux: ``clear_refs`` 5 resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@dataclass(frozen=True)
class Row:
    """One line of a benchmark table: per-repetition ratios ours / baseline, and the target."""

    name: str
    ours: list[float]
    base: list[float]
    unit: str
    target: str | None  # e.g. ">= 2.0" or "<= 0.75"; None: reported, no target
    baseline: str = "TRL"

    @property
    def ratios(self) -> list[float]:
        return [o / b for o, b in zip(self.ours, self.base, strict=True)]

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target.split()
        ratio = statistics.median(self.ratios)
        return ratio >= float(bound) if op == ">=" else ratio <= float(bound)


def best_of(variants: dict[str, list[float]], higher_is_better: bool) -> tuple[str, list[float]]:
    """The variant with the best median (a peer at its best configuration), and its values."""
    pick = max if higher_is_better else min
    name = pick(variants, key=lambda k: statistics.median(variants[k]))
    return name, variants[name]


def ratio_label(ratio: float) -> str:
    return f"{ratio:g}"


def print_ratio_summary(title: str, tables: dict[float, list[Row]], measured: dict[float, float]) -> None:
    """One line per row, one column per prompt/completion ratio: the median ratio ours / baseline and its verdict."""
    ratios = sorted(tables)
    print(f"\n### {title}\n")
    head = " | ".join(f"ratio {ratio_label(r)} (measured {measured[r]:.2f})" for r in ratios)
    print(f"| row | {head} | target |")
    print("|---|" + "---|" * len(ratios) + "---|")
    for i, row in enumerate(tables[ratios[0]]):
        cells = []
        for r in ratios:
            x = tables[r][i]
            mark = {True: "met", False: "**missed**", None: ""}[x.met]
            cells.append(f"{statistics.median(x.ratios):.2f}x {mark}".strip())
        print(f"| {row.name} | {' | '.join(cells)} | {row.target + 'x' if row.target else '-'} |")
    sys.stdout.flush()


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """median (min-max)."""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def print_table(title: str, rows: list[Row], notes: list[str]) -> None:
    """The benchmark's table, every row printed whether it meets its target or not."""
    print(f"\n### {title}\n")
    for note in notes:
        print(f"- {note}")
    print()
    print("| row | prefops | baseline | ratio, median (min-max) | target | |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ours, base = spread(r.ours), spread(r.base)
        ratio = spread(r.ratios)
        mark = {True: "met", False: "**missed**", None: ""}[r.met]
        target = f"{r.target}x" if r.target else "-"
        print(f"| {r.name} | {ours} {r.unit} | {base} {r.unit} ({r.baseline}) | {ratio}x | {target} | {mark} |")
    print(f"\n{len(rows[0].ours) if rows else 0} repetitions; {machine()}")
    sys.stdout.flush()


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    torch = sys.modules.get("torch")
    threads = f", torch {torch.__version__} with {torch.get_num_threads()} threads" if torch else ""
    cpus = f"{os.cpu_count()} CPUs ({_cpu_model()})"
    return f"{time.strftime('%Y-%m-%d')}, {cpus}{threads}, load average {load:.1f} at the end"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()
