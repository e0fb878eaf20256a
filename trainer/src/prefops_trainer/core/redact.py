"""What of a job's spec a published model carries (its card and ``prefops.json``): an allowlist. Pure.

A model card travels further than the cluster: it names what shaped the model (the base model and data, the
algorithm, every hyperparameter, the gate) and nothing about where or how the job ran: not the work storage or the
Secret holding its credentials, not the resources, node placement, scheduler or service account, not the lifecycle
settings. :data:`PUBLISHED` and :data:`WITHHELD` together name every field of the spec
(``tests/trainer/test_lineage.py`` holds them against ``JobSpec``, and against docs/trainer.md), so a new field is
published only once someone adds it to :data:`PUBLISHED`.

One withheld field is published apart, on purpose (:data:`IN_LINEAGE`): the trainer image. The lineage records the
image reference the pods ran (``PREFOPS_TRAINER_IMAGE``: ``spec.resources.image`` or the operator's default, as
written), because it names the code that computed the model; pin it by digest to make it exact.
"""

from __future__ import annotations

from typing import Any

from .rules.lifecycle import LIFECYCLE
from .spec import Job

#: Dotted camelCase paths of the spec published with the model; a block is published whole.
PUBLISHED: tuple[str, ...] = (
    "model",
    "dataset",
    "algorithm",
    "rewardModel",
    "generation",
    "training",
    "reference",
    "output.merge",
    "output.gate",
)
#: What stays out: where the model and the work storage live (and the Secret for them), how its files are cut, where
#: and how the job runs, and its lifecycle.
WITHHELD: tuple[str, ...] = ("output.uri", "output.maxShardSize", "storage", "resources", *LIFECYCLE)


#: Withheld spec fields the lineage records anyway, by the lineage key that holds them (``phases/lineage.py``).
IN_LINEAGE: dict[str, str] = {"resources.image": "trainerImage"}


def published_spec(job: Job) -> dict[str, Any]:
    """The job's spec (as written, defaults filled in, absent fields left out) reduced to :data:`PUBLISHED`."""
    spec = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    out: dict[str, Any] = {}
    for path in PUBLISHED:
        head, _, field = path.partition(".")
        if head not in spec:
            continue
        if not field:
            out[head] = spec[head]
        elif field in spec[head]:
            out.setdefault(head, {})[field] = spec[head][field]
    return out


def published_manifest(job: Job) -> dict[str, Any]:
    """The manifest a model card shows: kind, the job's name and :func:`published_spec`."""
    return {
        "apiVersion": job.api_version,
        "kind": job.kind,
        "metadata": {"name": job.name},
        "spec": published_spec(job),
    }
