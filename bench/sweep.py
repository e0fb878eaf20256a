"""Benchmark: a beta sweep of 4 DPO jobs on one model and dataset.

* prefops: four ``prefops-trainer run`` jobs; the first computes the reference log-probs, the other three find
  them in the shared cache (``cacheHit: true``) and never run a reference forward.
* TRL: four DPOTrainer runs with the reference computed online (LoRA: the adapter disabled, a forward more per
  micro-batch).

Each job is its own process, as it would be on a cluster; total wall time includes model loading. Prints the
table of ratios against the TRL baseline measured in the same run. Target: prefops total ≤ 0.8× TRL.

    python bench/sweep.py [--betas 0.05 0.1 0.2 0.5] [--pairs 256] [--hidden 384] [--layers 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from trainer_step import BATCH, MAX_LENGTH, build_assets

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TRL_JOB = """
import sys, datasets, torch
BATCH, MAX_LENGTH = int(sys.argv[3]), int(sys.argv[4])
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer
root, beta = sys.argv[1], float(sys.argv[2])
ds = datasets.load_dataset("json", data_files=f"{root}/pairs.jsonl", split="train")
model = AutoModelForCausalLM.from_pretrained(f"{root}/model", dtype=torch.float32)
args = DPOConfig(output_dir=f"{root}/trl-{beta}", beta=beta, num_train_epochs=1, per_device_train_batch_size=BATCH,
                 learning_rate=5e-4, max_length=MAX_LENGTH, gradient_checkpointing=False, bf16=False, use_cpu=True,
                 report_to=[], save_strategy="no", logging_steps=10, disable_tqdm=True, seed=42)
lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
DPOTrainer(model=model, args=args, train_dataset=ds, peft_config=lora).train()
"""


def our_job(root: Path, beta: float) -> Path:
    doc = {
        "apiVersion": "prefops.dev/v1alpha1",
        "kind": "PreferenceTrainingJob",
        "metadata": {"name": f"sweep-beta-{beta}"},
        "spec": {
            "model": {"source": str(root / "model"), "dtype": "float32",
                      "lora": {"r": 16, "alpha": 32, "dropout": 0.0}},
            "dataset": {"source": str(root / "pairs.jsonl"), "maxLength": MAX_LENGTH},
            "algorithm": {"name": "dpo", "beta": beta},
            "training": {"epochs": 1, "learningRate": 5e-4, "perDeviceBatchSize": BATCH, "checkpointEverySteps": 10**6},
            "reference": {"batchSize": BATCH},
            "resources": {"gpusPerNode": 0},
            "output": {"uri": str(root / f"out-{beta}")},
            "storage": {"uri": str(root / "work")},
        },
    }  # fmt: skip
    path = root / f"job-{beta}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - t0, result.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--betas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5])
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8000)
    args = p.parse_args()
    env = {**os.environ, "PREFOPS_METRICS_PORT": "off", "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory(prefix="prefops-sweep-") as tmp:
        root = Path(tmp)
        build_assets(root, args)
        rows = []
        for beta in args.betas:
            trl_s, _ = timed([sys.executable, "-c", TRL_JOB, str(root), str(beta), str(BATCH), str(MAX_LENGTH)],
                             {**env, "HF_DATASETS_CACHE": str(root / f"hf-{beta}")})  # fmt: skip
            ours_s, _ = timed([sys.executable, "-m", "prefops_trainer", "run", str(our_job(root, beta))], env)
            hit = json.loads((root / f"out-{beta}" / "prefops.json").read_text())["phases"]["precompute"]["cacheHit"]
            rows.append((beta, trl_s, ours_s, hit))
            print(f"beta {beta}: TRL {trl_s:.1f}s, prefops {ours_s:.1f}s (cacheHit={str(hit).lower()})", flush=True)
    print()
    print(
        f"{len(args.betas)} DPO jobs (LoRA r=16), {args.pairs} pairs x 1 epoch, batch {BATCH}, Llama hidden "
        f"{args.hidden} x {args.layers}, float32 on CPU; each job a separate process"
    )
    print()
    print("| job | TRL online reference (s) | prefops shared cache (s) | ratio | cache |")
    print("|---|---|---|---|---|")
    for beta, trl_s, ours_s, hit in rows:
        print(f"| beta {beta} | {trl_s:.1f} | {ours_s:.1f} | {ours_s / trl_s:.2f}x | {'hit' if hit else 'miss'} |")
    trl_total, ours_total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"| **total** | {trl_total:.1f} | {ours_total:.1f} | **{ours_total / trl_total:.2f}x** | target <= 0.80x |")


if __name__ == "__main__":
    main()
