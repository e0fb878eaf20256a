"""The model card (``README.md`` beside the exported model): what was trained, on what, how well, and its lineage.

It carries only what ``prefops.json`` carries: the published part of the spec (``core.redact``), the metrics, the
final evaluation and the gate's verdict, and the lineage; never the work storage, its Secret or the job's placement.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from .. import __version__
from ..core.redact import published_manifest
from ..core.reports import Described, EvaluationRecord, GateRecord, Lineage, Phases, gate_bound
from ..inputs import Inputs

MANIFEST = "prefops.json"


def _table(values: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in values.items() if isinstance(v, int | float))
    return f"| metric | value |\n|---|---|\n{rows}"


def _evaluation(evaluation: EvaluationRecord | None, gate: GateRecord | None) -> str:
    if evaluation is None:
        return ""
    text = f"\n## Evaluation\nOn the `{evaluation['split']}` split at step {evaluation['step']}:\n\n"
    text += _table(evaluation["metrics"]) + "\n"
    if gate is not None:
        kind, bound = gate_bound(gate)
        sign = "≥" if kind == "min" else "≤"
        text += f"\nQuality gate `{gate['metric']} {sign} {bound:g}`: passed ({gate['value']:.4g}).\n"
    return text


def _lineage(lineage: Lineage) -> str:
    base, data = lineage["baseModel"], lineage["data"]
    files = "\n".join(f"| {path} | `{digest}` |" for path, digest in base["sha256"].items())
    splits = "\n".join(
        f"| {name} (`{s['split']}`) | {s['rows']} | `{s['sha256']}` |" for name, s in data["splits"].items()
    )
    keys = lineage["referenceCache"]
    cache = ", ".join(f"{split} `{key}`" for split, key in keys.items()) if keys else "none (reference-free)"
    libs = ", ".join(f"{name} {v}" for name, v in lineage["versions"].items() if v)
    return f"""
## Lineage
Base model files (sha256):

| file | sha256 |
|---|---|
{files}

Data rows used (sha256 of the rows as canonical JSON lines):

| split | rows | sha256 |
|---|---|---|
{splits}

- reference cache: {cache}
- trainer image: {lineage["trainerImage"] or "none (local run)"}
- versions: {libs}
"""


def _front_matter(base: str, algorithm: str, lora: bool) -> str:
    """The card's YAML metadata (the Hub reads it), serialized: a base model named ``a: b #c`` or across lines stays
    one string."""
    tags = ["prefops", "trl", algorithm, *(["lora"] if lora else [])]
    doc = {"library_name": "transformers", "tags": tags, "base_model": base}
    text: str = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=10**6)
    return text


def model_card(inputs: Inputs, n_files: int, phases: Phases, lora: bool, manifest: Described) -> str:
    """The card of the model ``manifest`` (the ``prefops.json`` being written) describes."""
    spec = inputs.spec
    base, data_source = spec.model.source.as_written, spec.dataset.source.as_written
    metrics = phases["train"].get("metrics", {}) if "train" in phases else {}
    data = ", ".join(f"{name}: {len(s)} pairs" for name, s in inputs.splits.items())
    weights = hashlib.sha256(json.dumps(inputs.model_files, sort_keys=True).encode()).hexdigest()[:16]
    manifest_yaml = yaml.safe_dump(published_manifest(inputs.job), sort_keys=False)
    return f"""---
{_front_matter(base, spec.algorithm.name, lora)}---
# {inputs.job.name}

Trained by prefops {__version__} with `{spec.algorithm.name}` (loss {", ".join(spec.algorithm.losses)},
beta {spec.algorithm.beta}) {"as a LoRA adapter merged into" if lora else "by full fine-tuning of"} the base model.

## Model
- base: `{base}`{f" @ `{spec.model.revision}`" if spec.model.revision else ""} (files digest `{weights}`)
- dtype: {inputs.dtype}

## Data
- source: `{data_source}` ({data}), maxLength {spec.dataset.max_length}

## Final training metrics
{_table(dict(sorted(metrics.items())))}
{_evaluation(manifest.get("evaluation"), manifest.get("gate"))}{_lineage(manifest["lineage"])}
## Job spec
What shaped the model (storage, credentials, resources and placement are left out):

```yaml
{manifest_yaml}```

The checksums of every file are in `{MANIFEST}` ({n_files} files).
"""
