"""The export phase: merge LoRA into the base weights, write safetensors + tokenizer + a model card to
``output.uri``, and the ``prefops.json`` manifest last, so its presence marks a complete model.

Re-running an interrupted export completes it: files already uploaded with the same content are not sent
again, and an earlier ``prefops.json`` at the destination is removed before anything is overwritten, so a
reader never sees a manifest beside files it does not describe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..adapters import metrics, storage
from ..core.uris import Uri
from ..core.workspace import TRAINED_MARKER
from ..inputs import Inputs
from . import reports

log = logging.getLogger(__name__)

MANIFEST = "prefops.json"
#: Records which files of an unfinished export already reached the destination, with their sha256.
JOURNAL = ".prefops-upload.json"


def merge(base_dir: Path, adapter_dir: Path, out: Path, model_kwargs: dict[str, Any]) -> None:
    """Merge the LoRA adapter in ``adapter_dir`` into the base model and save it (safetensors) to ``out``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, **model_kwargs)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * 2**20):
            h.update(chunk)
    return h.hexdigest()


def file_table(root: Path) -> list[dict[str, Any]]:
    """Every file under ``root`` with its size and sha256, sorted by path."""
    return [
        {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def model_card(inputs: Inputs, files: list[dict[str, Any]], phases: dict[str, Any], lora: bool) -> str:
    spec = inputs.spec
    base, data_source = spec.model.source.as_written, spec.dataset.source.as_written
    metrics = phases.get("train", {}).get("metrics", {})
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items()) if isinstance(v, int | float))
    data = ", ".join(f"{name}: {len(s)} pairs" for name, s in inputs.splits.items())
    weights = hashlib.sha256(json.dumps(inputs.model_files, sort_keys=True).encode()).hexdigest()[:16]
    return f"""---
library_name: transformers
tags: [prefops, trl, {spec.algorithm.name}{", lora" if lora else ""}]
base_model: {base}
---
# {inputs.job.name}

Trained by prefops {__version__} with `{spec.algorithm.name}` (loss {", ".join(spec.algorithm.losses)},
beta {spec.algorithm.beta}) {"as a LoRA adapter merged into" if lora else "by full fine-tuning of"} the base model.

## Model
- base: `{base}`{f" @ `{spec.model.revision}`" if spec.model.revision else ""} (files digest `{weights}`)
- dtype: {inputs.dtype}

## Data
- source: `{data_source}` ({data}), maxLength {spec.dataset.max_length}

## Final training metrics
| metric | value |
|---|---|
{rows}

## Job spec
```yaml
{yaml.safe_dump(inputs.job.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)}```

The checksums of every file are in `{MANIFEST}` ({len(files)} files).
"""


def trained_dir(inputs: Inputs) -> Path:
    """The trained weights as a local folder (downloaded from storage when remote); error if train did not finish."""
    target = inputs.ws.trained
    if not storage.exists(inputs.ws.trained_marker):
        raise RuntimeError(f"no finished training result at {target}: run the train phase first")
    if target.is_local:
        return Path(target.path)
    return storage.download_dir(target, storage.local_dir(inputs.ws.local("trained")))


def build_local(inputs: Inputs, out: Path) -> bool:
    """Write the exported model (without manifest) into ``out``; return whether LoRA was merged."""
    trained = trained_dir(inputs)
    lora = (trained / "adapter_config.json").exists()
    if lora and inputs.spec.output.merge:
        from ..adapters.modelio import model_init_kwargs

        merge(inputs.model_path, trained, out, model_init_kwargs(inputs.spec.model))
    else:
        shutil.copytree(
            trained, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(TRAINED_MARKER, "training_args.bin")
        )
    inputs.tokenizer.save_pretrained(out)
    return lora


def run(inputs: Inputs) -> dict[str, Any]:
    """Export to ``spec.output.uri`` and return the manifest written there."""
    metrics.enter("export")
    dest = inputs.spec.output.uri
    report: reports.Report = {}
    with reports.timed(report), tempfile.TemporaryDirectory(prefix="prefops-export-") as tmp:
        out = Path(tmp) / "model"
        out.mkdir()
        lora = build_local(inputs, out)
        phases = reports.gathered(inputs.ws, inputs.spec.precompute)
        files = file_table(out)  # the card's checksum count is of the weights/tokenizer files
        (out / "README.md").write_text(model_card(inputs, files, phases, lora))
        _extra_artifacts(inputs, out)
        files = file_table(out)
        _upload(out, dest, files)
    manifest = _manifest(inputs, lora, files, phases | {"export": report})
    storage.write_json(dest.join(MANIFEST), manifest)  # last: the model is complete
    reports.write(inputs.ws, "export", report)
    log.info("model exported to %s (%d files)", dest, len(files))
    return manifest


def _manifest(inputs: Inputs, lora: bool, files: list[dict[str, Any]], phases: dict[str, Any]) -> dict[str, Any]:
    """``prefops.json``: the job, the base model, every file with its checksum, each phase's report, the metrics."""
    job = inputs.job
    return {
        "format": 1,
        "job": {"name": job.name, "namespace": job.namespace, "uid": job.metadata.uid},
        "model": {
            "source": job.spec.model.source.as_written,
            "dtype": inputs.dtype,
            "loraMerged": lora and job.spec.output.merge,
        },
        "algorithm": job.spec.algorithm.name,
        "files": files,
        "phases": phases,
        "metrics": phases.get("train", {}).get("metrics", {}),
        "prefopsVersion": __version__,
    }


def _extra_artifacts(inputs: Inputs, out: Path) -> None:
    """Training curves beside the model, from the train phase's log history."""
    from ..adapters.plots import plot_training

    train = reports.read(inputs.ws, "train") or {}
    spec = inputs.spec
    title = f"{inputs.job.name}: {spec.algorithm.name} ({', '.join(spec.algorithm.losses)}), beta {spec.algorithm.beta}"
    plot_training(train.get("logHistory", []), out / "training-curves.png", title)


def _upload(local: Path, dest: Uri, files: list[dict[str, Any]]) -> None:
    """Send ``files`` to ``dest``, resuming an interrupted upload by the journal of what already arrived."""
    journal_uri = dest.join(JOURNAL)
    journal: dict[str, str] = storage.read_json_if_exists(journal_uri) or {}
    storage.abort_incomplete_uploads(dest)
    if storage.exists(dest.join(MANIFEST)):
        storage.remove(dest.join(MANIFEST))  # no complete-looking model while files change underneath
    remote = storage.remote_sizes(dest)
    for f in files:
        if journal.get(f["path"]) == f["sha256"] and remote.get(f["path"]) == f["size"]:
            continue
        storage.upload_file(local / f["path"], dest.join(f["path"]))
        journal[f["path"]] = f["sha256"]
        storage.write_json(journal_uri, journal)
    storage.remove(journal_uri)
