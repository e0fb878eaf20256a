"""The lineage a model carries in ``prefops.json`` and its card: enough to reproduce and audit it.

- the base model: its source and revision, and the sha256 of every file that enters it (weights, config, tokenizer,
  chat template), computed on the files training read (for ``s3://`` and ``hf://`` sources, the local copies);
- the data: its source, and per split the split's name, its row count and the sha256 of its rows as training read
  them (``adapters.data.rows_digest``: canonical JSON lines, recomputable from the file);
- the reference cache key of each split (none for a job without a precompute phase);
- the trainer image (``PREFOPS_TRAINER_IMAGE``, set by the operator; none in local mode);
- the versions of prefops and of the libraries that compute the numbers;
- the spec, reduced to what shaped the model (``core.redact``).
"""

from __future__ import annotations

import importlib.metadata
import os

from .. import __version__
from ..adapters.data import rows_digest
from ..core.redact import published_spec
from ..core.reports import Lineage
from ..inputs import Inputs

#: The environment variable the operator sets to the image a pod runs (docs/contract.md §3).
IMAGE_ENV = "PREFOPS_TRAINER_IMAGE"
#: The distributions whose versions a model records (the trainer's own is ``prefops``).
LIBRARIES = ("torch", "transformers", "trl", "peft", "deepspeed")


def versions() -> dict[str, str | None]:
    """prefops' version and each of :data:`LIBRARIES`' (None when it is not installed)."""
    found: dict[str, str | None] = {"prefops": __version__}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def lineage(inputs: Inputs) -> Lineage:
    spec = inputs.spec
    names = {"train": spec.dataset.split, "eval": spec.dataset.eval_split}
    return {
        "baseModel": {
            "source": spec.model.source.as_written,
            "revision": spec.model.revision,
            "sha256": dict(inputs.model_files),
        },
        "data": {
            "source": spec.dataset.source.as_written,
            "splits": {
                split: {"split": names[split], "rows": len(loaded), "sha256": rows_digest(loaded.rows)}
                for split, loaded in inputs.splits.items()
            },
        },
        "referenceCache": {split: inputs.ref_cache(split).key for split in inputs.splits} if spec.precompute else None,
        "trainerImage": os.environ.get(IMAGE_ENV) or None,
        "versions": versions(),
        "spec": published_spec(inputs.job),
    }
