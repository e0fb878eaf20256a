"""Deterministic names and labels of a job's children.

Every child's name is a function of the job's name (and, for pods, the phase, the attempt and the replica index),
so creating it twice is a 409, never a duplicate, and a restarted operator finds what it made before. Each
attempt's pods have names of their own: a pod that cannot go away (Terminating on a dead node) never holds a name
the next attempt needs. Names are DNS-1035 labels of at
most 63 characters (pod hostnames and Service names must be); a name that would be longer keeps a readable
prefix of the job name and a hash of the whole job name.
"""

from __future__ import annotations

# the phases live in .phases: named here for the name builders
from .phases import PodPhase as PodPhase

# the naming rule is shared with the trainer
from .rules.names import MAX_NAME as MAX_NAME
from .rules.names import child_name as child_name

LABEL_JOB = "prefops.dev/job-name"
LABEL_PHASE = "prefops.dev/phase"
LABEL_INDEX = "prefops.dev/replica-index"
LABEL_ATTEMPT = "prefops.dev/attempt"


def config_map_name(job: str) -> str:
    return child_name(job, "config")


def service_name(job: str) -> str:
    """The headless Service giving training pods stable DNS names (``<pod>.<service>``)."""
    return child_name(job, "train")


def network_policy_name(job: str) -> str:
    return child_name(job, "ingress")


def pod_name(job: str, phase: PodPhase, index: int, attempt: int) -> str:
    """``<job>-<phase>-a<attempt>-<index>``, e.g. ``qwen-train-a2-0``: replica ``index`` of ``attempt``."""
    return child_name(job, phase.value, f"a{attempt}", str(index))


def job_labels(job: str) -> dict[str, str]:
    return {LABEL_JOB: job}


def pod_labels(job: str, phase: PodPhase, index: int, attempt: int) -> dict[str, str]:
    return {LABEL_JOB: job, LABEL_PHASE: phase.value, LABEL_INDEX: str(index), LABEL_ATTEMPT: str(attempt)}
