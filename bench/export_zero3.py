"""Benchmark: the export's peak host memory (RSS) consolidating a ZeRO-3 full fine-tune, against the model's size.

For four random Llama-shaped models in bfloat16 (about 20M, 45M, 120M and 340M parameters), the trained weights a
ZeRO-3 full fine-tune on 4 ranks hands to export are written here as the train phase writes them
(``adapters.zero3.save``: each rank's partitions of every parameter, DeepSpeed's partition rule, one safetensors file
per rank, and the layout), tensor by tensor: no training, no download. Each consolidation runs in a process of its
own, which reports its own peak RSS (``VmHWM``: resident memory, file pages mapped included):

* ``whole``: every tensor gathered from its partitions and held until the model is written with safetensors'
  ``save_file``: the model in one process, as rank 0 held it at every save before issue 21
  (``stage3_gather_16bit_weights_on_model_save``);
* ``streamed``: the export's consolidation (``adapters.zero3.consolidate``), one block of bytes at a time, with
  ``output.maxShardSize``'s default (5G).

Printed: each model's size and both peaks, then a least-squares fit ``peak = a + b x model bytes`` for each side.
Target: the streamed consolidation's ``b <= 0.1`` (its memory does not grow with the model).

With ``--train-save``: the train phase's peak RSS on each rank instead, a ZeRO-3 full fine-tune on 2 CPU ranks
gathering the model on every save (as before) against saving each rank's partitions (now); with ``--train-save lora``
a LoRA job on the same model, saved by transformers' save of a peft model (every module gathered in turn, the adapter
kept: as before) against the adapter's parameters alone gathered (now).

    python bench/export_zero3.py [--quick]
    python bench/export_zero3.py --train-save [lora]
    python bench/export_zero3.py --one {whole,streamed} TRAINED OUT   # one consolidation, printed as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_memory import report, run_one, shapes
from lib.common import QUIET_ENV, ROOT, machine, peak_rss_mb

sys.path.insert(0, str(ROOT / "trainer" / "src"))  # this checkout's trainer, as the measured processes get it

#: name: (hidden, layers, heads, kv heads, intermediate); vocab 32000 (export_memory's), head_dim 64 but the first.
SIZES = {
    "20M": (256, 4, 4, 2, 688),
    "45M": (512, 4, 8, 4, 1376),
    "120M": (768, 12, 12, 4, 2048),
    "340M": (1024, 24, 16, 4, 2816),
}
WORLD = 4


def write_trained(folder: Path, size: tuple[int, int, int, int, int]) -> int:
    """The partitions of a random bfloat16 Llama of ``size`` on :data:`WORLD` ranks, as ``zero3.save`` writes them,
    one tensor in memory at a time; its parameter count."""
    import torch

    from prefops_trainer.core import zero3
    from prefops_trainer.core.weights import Tensor, encode_header

    all_shapes = shapes(*size)
    entries = [zero3.Entry(name, "BF16", shape, True) for name, shape in all_shapes.items()]
    folder.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context((folder / zero3.partition_file(r, WORLD)).open("wb")) for r in range(WORLD)]
        parts = [Tensor(e.name, "BF16", (zero3.partition_numel(e.numel, WORLD),), 0, 0) for e in entries]
        for f in files:
            f.write(encode_header([Tensor(t.name, t.dtype, t.shape, 0, t.shape[0] * 2) for t in parts]))
        for e in entries:
            size_ = zero3.partition_numel(e.numel, WORLD)
            flat = (torch.randn(e.numel) * 0.02).to(torch.bfloat16)
            flat = torch.cat([flat, torch.zeros(size_ * WORLD - e.numel, dtype=torch.bfloat16)])
            for rank, f in enumerate(files):
                f.write(flat[rank * size_ : (rank + 1) * size_].view(torch.uint8).numpy().tobytes())
    (folder / zero3.LAYOUT).write_text(json.dumps(zero3.layout_doc(WORLD, entries)))
    return sum(math.prod(s) for s in all_shapes.values())


def one(kind: str, trained: Path, out: Path) -> None:
    """One consolidation in this process; print its peak RSS and duration as JSON."""
    from prefops_trainer.adapters import zero3

    start = time.perf_counter()
    if kind == "streamed":
        zero3.consolidate(trained, out, 5 * 10**9)
    else:
        whole(trained, out)
    print(json.dumps({"peak": peak_rss_mb() * 2**20, "seconds": time.perf_counter() - start}))


def whole(trained: Path, out: Path) -> None:
    """Every tensor gathered from its partitions and held, then the model saved at once (rank 0's gather)."""
    import torch
    from safetensors.torch import save_file

    from prefops_trainer.core import zero3 as layout

    doc = layout.parse_layout(json.loads((trained / layout.LAYOUT).read_text()), "layout")
    ranks = [_load(trained / layout.partition_file(r, doc.world)) for r in range(doc.world)]
    model = {e.name: torch.cat([r[e.name] for r in ranks])[: e.numel].view(e.shape) for e in doc.entries}
    del ranks
    out.mkdir()
    save_file(model, str(out / "model.safetensors"), metadata={"format": "pt"})


def _load(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has keys(), no iteration)


def measure(kind: str, trained: Path, out: Path) -> dict:
    return run_one(__file__, kind, [trained], out, "consolidation")


#: The train phase measured with ``--train-save``: a random float32 Llama of about 30M parameters (the tiny
#: tokenizer's 66-token vocabulary), ZeRO-3 on 2 CPU ranks, 2 steps, a checkpoint at step 2 and the final save.
TRAIN_SIZE = (640, 6, 10, 5, 1728)
#: A ``sitecustomize`` that puts back the gather on every save (the behaviour before issue 21 item 2: a full
#: fine-tune gathered on rank 0, a LoRA job saved by transformers' save of a peft model).
GATHER_AGAIN = """import prefops_trainer.core.trlconfig as t

_own = t.deepspeed_config


def _gathering(ds):
    config = _own(ds)
    config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    return config


t.deepspeed_config = _gathering
"""


#: The adapter of ``--train-save lora``.
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}


def train_save(root: Path, gather: bool, lora: bool = False) -> dict:
    """Peak RSS of rank 0 and rank 1 (``VmHWM``, polled) through a ZeRO-3 train phase (full fine-tune or LoRA)."""
    import yaml

    job = root / (("lora-" if lora else "full-") + ("gather.yaml" if gather else "partitions.yaml"))
    doc = {
        "apiVersion": "prefops.dev/v1alpha1", "kind": "PreferenceTrainingJob", "metadata": {"name": job.stem},
        "spec": {
            "model": {"source": str(root / "model"), "dtype": "float32", "lora": LORA if lora else None},
            "dataset": {"source": str(ROOT / "examples" / "tiny" / "prefs.jsonl"), "maxLength": 64, "maxSamples": 64},
            "algorithm": {"name": "dpo"},
            "training": {"maxSteps": 2, "perDeviceBatchSize": 4, "checkpointEverySteps": 2, "deepspeed": {"stage": 3}},
            "resources": {"gpusPerNode": 0, "processesPerNode": 2},
            "output": {"uri": str(root / f"out-{job.stem}")}, "storage": {"uri": str(root / f"work-{job.stem}")},
        },
    }  # fmt: skip
    job.write_text(yaml.safe_dump(doc))
    paths = [str(ROOT / "trainer" / "src")] + ([str(root / "gather")] if gather else [])
    env = {**QUIET_ENV, **{k: v for k, v in os.environ.items() if k == "TORCH_EXTENSIONS_DIR"}}
    env |= {"PYTHONPATH": os.pathsep.join(paths), "PATH": os.environ["PATH"]}
    for phase in ("precompute", "train"):
        argv = [sys.executable, "-m", "prefops_trainer", phase, str(job)]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peaks = _poll_ranks(proc)
        if proc.wait() != 0:
            raise RuntimeError(f"{phase} failed:\n{proc.stderr.read()[-3000:] if proc.stderr else ''}")
    return peaks


def _poll_ranks(proc: subprocess.Popen) -> dict:
    """The last ``VmHWM`` seen of each rank among ``proc``'s descendants, by rank, until ``proc`` exits."""
    import psutil

    peaks: dict[str, float] = {}
    while proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error, OSError):
                rank = child.environ().get("RANK")
                status = Path(f"/proc/{child.pid}/status").read_text()
                hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
                if rank is not None:
                    peaks[rank] = max(peaks.get(rank, 0), hwm * 1024)
        time.sleep(0.1)
    return peaks


#: ``--train-save`` kind: (what is trained, the saves before, the saves now)
TRAIN_SAVE_LABELS = {
    "full": ("full fine-tune", "gather on every save (before)", "partitions (now)"),
    "lora": (f"LoRA r={LORA['r']}", "transformers' peft save: every module gathered (before)", "adapter alone (now)"),
}


def measure_train_save(kind: str) -> None:
    """Rank 0's and rank 1's peak RSS through the train phase, gathering at every save and saving as prefops does
    now (a full fine-tune's partitions, or a LoRA job's adapter alone gathered)."""
    import shutil as sh

    what, before, now = TRAIN_SAVE_LABELS[kind]
    with tempfile.TemporaryDirectory(prefix="prefops-bench-zero3-train-") as tmp:
        root = Path(tmp)
        params = _train_model(root / "model")
        (root / "gather").mkdir()
        (root / "gather" / "sitecustomize.py").write_text(GATHER_AGAIN)
        rows = {before: train_save(root, True, kind == "lora"), now: train_save(root, False, kind == "lora")}
        sh.rmtree(root)
    gib = 2**30
    print(f"\n### Train phase peak RSS, ZeRO-3 {what}, 2 CPU ranks, float32, {params / 1e6:.0f}M parameters "
          f"({params * 4 / gib:.2f} GiB)\n")  # fmt: skip
    print("| saves | rank 0 | rank 1 |\n|---|---|---|")
    for label, peaks in rows.items():
        print(f"| {label} | {peaks.get('0', 0) / gib:.2f} GiB | {peaks.get('1', 0) / gib:.2f} GiB |")
    print(f"\n{machine()}")


def _train_model(folder: Path) -> int:
    """A random float32 Llama of :data:`TRAIN_SIZE` with the tiny tokenizer; its parameter count."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, inter = TRAIN_SIZE
    config = LlamaConfig(vocab_size=66, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, pad_token_id=0, bos_token_id=2,
                         eos_token_id=3, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copyfile(ROOT / "examples" / "tiny" / "model" / name, folder / name)
    return model.num_parameters()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two smallest models only (a smoke run)")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "TRAINED", "OUT"))
    parser.add_argument("--train-save", nargs="?", const="full", choices=sorted(TRAIN_SAVE_LABELS),
                        help="the train phase's rank peaks, before and now (a full fine-tune, or LoRA)")  # fmt: skip
    args = parser.parse_args()
    if args.train_save:
        measure_train_save(args.train_save)
        return
    if args.one:
        one(args.one[0], *map(Path, args.one[1:]))
        return
    names = list(SIZES)[:2] if args.quick else list(SIZES)
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="prefops-bench-zero3-") as tmp:
            root = Path(tmp)
            params = write_trained(root / "trained", SIZES[name])
            old = measure("whole", root / "trained", root / "out")
            new = measure("streamed", root / "trained", root / "out")
            rows.append((name, params, params * 2, old, new))
            print(f"{name}: {params / 1e6:.0f}M parameters, whole {old['peak'] / 2**30:.2f} GiB, "
                  f"streamed {new['peak'] / 2**30:.2f} GiB", flush=True)  # fmt: skip
    report(rows, f"ZeRO-3 full fine-tune ({WORLD} ranks' partitions)", "whole (rank 0's gather)")


if __name__ == "__main__":
    main()
