"""Benchmark: the export's peak host memory (RSS) when it merges LoRA, against the size of the model.

For four random Llama-shaped models in bfloat16 (about 50M, 120M, 340M and 1B parameters, written here tensor by
tensor as 1 GB safetensors shards with an index: no download) and a random LoRA adapter (r 16 on every linear layer,
float32, as peft saves it), each merge runs in a process of its own, which reports its own peak RSS
(``VmHWM`` in ``/proc/self/status``: the kernel's high-water mark of this process's resident memory, file pages
mapped included; not ``getrusage``'s ``ru_maxrss``, which Linux carries over from the parent through fork and exec,
so a child would report at least the RSS of the benchmark that generated the model):

* ``in memory``: peft's ``merge_and_unload`` on the whole model loaded with transformers, then ``save_pretrained``:
  the export before issue 21 (``phases.export.merge_in_memory``, which it still falls back to for converted
  checkpoints);
* ``streamed``: the export's merge (``adapters.weights.merge_lora``), one tensor (a block of rows) at a time, with
  ``output.maxShardSize``'s default (5G).

Printed: each model's size and both peaks, then a least-squares fit ``peak = a + b x model bytes`` for each side.
Target: the streamed merge's ``b <= 0.1`` (its memory does not grow with the model).

    python bench/export_memory.py [--quick]
    python bench/export_memory.py --one {in-memory,streamed} BASE ADAPTER OUT   # one merge, printed as JSON
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib.common import QUIET_ENV, ROOT, machine, peak_rss_mb

#: name: (hidden, layers, heads, kv heads, intermediate); vocab 32000, head_dim 64.
SIZES = {
    "50M": (512, 8, 8, 4, 1376),
    "120M": (768, 12, 12, 4, 2048),
    "340M": (1024, 24, 16, 4, 2816),
    "1B": (2048, 20, 32, 4, 5632),
}
VOCAB = 32000
RANK = 16
BASE_SHARD = 10**9
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TARGET_B = 0.1


def shapes(hidden: int, layers: int, heads: int, kv: int, inter: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Llama of this shape, as transformers names it on disk."""
    kv_dim = kv * hidden // heads
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        out |= {
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (kv_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        }
    return out | {"model.norm.weight": (hidden,), "lm_head.weight": (VOCAB, hidden)}


def write_base(folder: Path, size: tuple[int, int, int, int, int]) -> int:
    """A random bfloat16 Llama of ``size`` in ``folder`` (1 GB shards and an index); its parameter count."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    hidden, layers, heads, kv, inter = size
    LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=inter, dtype="bfloat16", tie_word_embeddings=False,
    ).save_pretrained(folder)  # fmt: skip
    all_shapes = shapes(*size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    weight_map, count, held = {}, 0, 0
    for name, shape in all_shapes.items():
        if held and held + math.prod(shape) * 2 > BASE_SHARD:
            _save_shard(folder, shards, save_file)
            held = 0
        shards[-1][name] = (torch.randn(shape) * 0.02).to(torch.bfloat16)
        held += math.prod(shape) * 2
        count += math.prod(shape)
        weight_map[name] = len(shards)
    _save_shard(folder, shards, save_file)
    files = {i: f"model-{i:05d}-of-{len(shards) - 1:05d}.safetensors" for i in range(1, len(shards))}
    for i, name in files.items():
        (folder / f"part-{i}").rename(folder / name)
    index = {"metadata": {"total_size": count * 2}, "weight_map": {k: files[v] for k, v in weight_map.items()}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return count


def _save_shard(folder: Path, shards: list, save_file) -> None:
    save_file(shards[-1], str(folder / f"part-{len(shards)}"), metadata={"format": "pt"})
    shards[-1].clear()
    shards.append({})


def write_adapter(folder: Path, size: tuple[int, int, int, int, int]) -> None:
    """A random peft LoRA adapter (r 16 on every linear layer, float32) for the model of ``size``."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    tensors = {}
    for name, shape in shapes(*size).items():
        module = name.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] in LINEAR:
            key = f"base_model.model.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(RANK, shape[1]) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn(shape[0], RANK) * 0.01
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": 2 * RANK, "lora_dropout": 0.0,
        "target_modules": list(LINEAR), "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
        "init_lora_weights": True, "modules_to_save": None, "base_model_name_or_path": None,
    }  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))


def one(kind: str, base: Path, adapter: Path, out: Path) -> None:
    """One merge in this process; print its peak RSS and duration as JSON."""
    from prefops_trainer.adapters import weights
    from prefops_trainer.phases import export

    start = time.perf_counter()
    if kind == "streamed":
        weights.merge_lora(base, adapter, out, 5 * 10**9)
    else:
        export.merge_in_memory(base, adapter, out, 5 * 10**9)
    print(json.dumps({"peak": peak_rss_mb() * 2**20, "seconds": time.perf_counter() - start}))


def measure(kind: str, base: Path, adapter: Path, out: Path) -> dict:
    return run_one(__file__, kind, [base, adapter], out, "merge")


def run_one(script: str, kind: str, inputs: list[Path], out: Path, what: str) -> dict:
    """``script --one kind *inputs out`` in a process of its own (its own peak RSS); its JSON result. ``out`` is
    removed after."""
    env = {**QUIET_ENV, "PYTHONPATH": str(ROOT / "trainer" / "src")}
    argv = [sys.executable, script, "--one", kind, *map(str, inputs), str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {what} failed:\n{done.stderr[-3000:]}")
    shutil.rmtree(out)
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares ``y = a + b x``: (a, b)."""
    b, a = statistics.linear_regression(xs, ys)
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two smallest models only (a smoke run)")
    parser.add_argument("--one", nargs=4, metavar=("KIND", "BASE", "ADAPTER", "OUT"))
    args = parser.parse_args()
    if args.one:
        one(args.one[0], *map(Path, args.one[1:]))
        return
    names = list(SIZES)[:2] if args.quick else list(SIZES)
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="prefops-bench-export-") as tmp:
            root = Path(tmp)
            params = write_base(root / "base", SIZES[name])
            write_adapter(root / "adapter", SIZES[name])
            old = measure("in-memory", root / "base", root / "adapter", root / "out")
            new = measure("streamed", root / "base", root / "adapter", root / "out")
            rows.append((name, params, params * 2, old, new))
            print(f"{name}: {params / 1e6:.0f}M parameters, in memory {old['peak'] / 2**30:.2f} GiB, "
                  f"streamed {new['peak'] / 2**30:.2f} GiB", flush=True)  # fmt: skip
    report(rows)


def report(rows: list, title: str = "LoRA merge", whole: str = "in memory (peft)") -> None:
    """The peak RSS table of the two ways (``whole``, then streamed) over the model sizes, and each one's fit."""
    gib = 2**30
    print(f"\n### Export peak RSS: {title}, bfloat16 Llama-shaped models\n")
    print(f"| model | parameters | weights | {whole} | streamed | ratio | seconds ({whole}, streamed) |")
    print("|---|---|---|---|---|---|---|")
    for name, params, size, old, new in rows:
        print(f"| {name} | {params / 1e6:.0f}M | {size / gib:.2f} GiB | {old['peak'] / gib:.2f} GiB "
              f"| {new['peak'] / gib:.3f} GiB | {new['peak'] / old['peak']:.2f} "
              f"| {old['seconds']:.1f}, {new['seconds']:.1f} |")  # fmt: skip
    xs = [float(r[2]) for r in rows]
    for label, key in ((whole, 3), ("streamed", 4)):
        a, b = fit(xs, [float(r[key]["peak"]) for r in rows])
        verdict = "" if key == 3 else f" (target b <= {TARGET_B}: {'met' if b <= TARGET_B else '**missed**'})"
        print(f"\n{label}: peak = {a / gib:.3f} GiB + {b:.4f} x model bytes{verdict}")
    print(f"\n{machine()}")


if __name__ == "__main__":
    main()
