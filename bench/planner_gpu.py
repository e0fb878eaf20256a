"""Benchmark, on a CUDA GPU: the memory planner against ``torch.cuda.max_memory_allocated`` of the train phase.

The same measurement as ``bench/planner.py`` (the trainer's own train phase, two optimizer steps, each configuration
in a process of its own, worst-case data), on one GPU in bfloat16 (float32 where the configuration says), with the
peak read from the CUDA caching allocator. The plan's ``overhead`` (the CUDA context, outside the allocator, and its
fragmentation) is left out of the compared total and printed beside it, with ``max_memory_reserved``. The last
configuration is TRL #3168's job (Qwen2.5-0.5B's shape in float32, batch 8, maxLength 1024, a reference model): the
planner says it fits an 80 GB GPU with TRL 1.16's chunked LM head; this measures it.

    python bench/planner_gpu.py [--quick]      # about 5 minutes on an H100; --quick: the first three
On a machine without a CUDA device it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planner import Config, measure_one, mib, print_results, run_config

GPU_CONFIGS = [
    Config("lora", size="M", dtype="bfloat16", gpu=True, batch=4, max_length=1024),
    Config("full", size="M", dtype="bfloat16", gpu=True, lora=False, batch=4, max_length=1024),
    Config("lora-gc", size="L", dtype="bfloat16", gpu=True, batch=8, max_length=1024, checkpointing=True),
    Config("lora-trl-layout", size="L", dtype="bfloat16", gpu=True, batch=4, max_length=1024, prefix_sharing=False),
    Config("full-L", size="L", dtype="bfloat16", gpu=True, lora=False, batch=4, max_length=2048),
    Config("qwen-lora", size="Qwen0.5B", dtype="bfloat16", gpu=True, batch=4, max_length=2048),
    Config(
        "trl-3168", size="Qwen0.5B", dtype="float32", gpu=True, lora=False, batch=8, max_length=1024, precompute=False
    ),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the first three configurations")
    p.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="also write every result to this file")
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure_one(Config(**json.loads(args.one.read_text())))))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("bench/planner_gpu.py: no CUDA device here, nothing measured (run it on a GPU machine)")
        return 0
    configs = GPU_CONFIGS[:3] if args.quick else GPU_CONFIGS
    results, failed = [], []
    for c in configs:
        print(f"measuring {c.describe()} ...", file=sys.stderr, flush=True)
        try:
            results.append(run_config(replace(c), script=__file__))
        except RuntimeError as e:  # an out-of-memory is a result too: the plan said it fits
            failed.append((c, str(e).splitlines()[-1][:300]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print_results(results, f"{torch.cuda.get_device_name(0)}, torch.cuda.max_memory_allocated")
    print("\n| configuration | plan's overhead MiB (context + fragmentation) | max_memory_reserved MiB |")
    print("|---|---|---|")
    for r in results:
        c = Config(**r["config"])
        print(f"| {c.describe()} | {mib(r['planned']['overhead'])} | {mib(r['measured']['extras']['reserved'])} |")
    for c, why in failed:
        print(f"\n**{c.describe()}: did not run to the end**: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
