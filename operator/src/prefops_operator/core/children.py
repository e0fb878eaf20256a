"""Manifests of a job's children, built as plain dicts from the parsed job. Pure.

- ConfigMap ``<job>-config``: the trainer config document ``job.yaml`` (docs/contract.md §2).
- Service ``<job>-train``: headless, gives training pods the DNS names torchrun rendezvous at.
- Pods ``<job>-<phase>-a<attempt>-<index>``: ``prefops-trainer <phase> /etc/prefops/job.yaml`` from the job's
  image, with the environment of docs/contract.md §3.

Every child carries the ``prefops.dev/*`` labels and a controller owner reference to the job, so deleting the
job deletes them (garbage collection) and ``kubectl get pods -l prefops.dev/job-name=<job>`` lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from .admission import PodSizing
from .naming import (
    child_name,
    config_map_name,
    job_labels,
    network_policy_name,
    pod_labels,
    pod_name,
    service_name,
)
from .phases import RENDEZVOUS, PodPhase, of_pods
from .pods import CONTAINER
from .settings import setting
from .spec import API_VERSION, KIND, Job
from .validation import GPU_RESOURCE, is_quantity

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when available: 10x faster, same output
CONFIG_DIR = "/etc/prefops"
CONFIG_FILE = "job.yaml"
CACHE_DIR = "/cache"  # model/dataset downloads (images/trainer/Dockerfile: HF_HOME, PREFOPS_CACHE_DIR)
#: /tmp on the read-only root: the image sends temporary files to /cache (TMPDIR); this catches code that hardcodes /tmp
TMP_DIR, TMP_SIZE_LIMIT = "/tmp", "1Gi"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_GROUP_COUNT = "kueue.x-k8s.io/pod-group-total-count"
VOLCANO_QUEUE = "scheduling.volcano.sh/queue-name"


#: a label as key=value (an optional DNS-subdomain prefix and '/', a name, a value)
_LABEL = re.compile(
    r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?=([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
)


def _port(value: int) -> bool:
    return 0 < value < 65536


#: Environment variables the operator sets on trainer pods (docs/contract.md §3), minus AWS_* from envFrom.
ENV_NNODES = "PREFOPS_NNODES"
ENV_NODE_RANK = "PREFOPS_NODE_RANK"
ENV_NPROC = "PREFOPS_NPROC_PER_NODE"
ENV_MASTER_ADDR = "PREFOPS_MASTER_ADDR"
ENV_MASTER_PORT = "PREFOPS_MASTER_PORT"
ENV_METRICS_PORT = "PREFOPS_METRICS_PORT"
ENV_METRICS_ADDR = "PREFOPS_METRICS_ADDR"
ENV_ATTEMPT = "PREFOPS_ATTEMPT"
ENV_TRAINED_ATTEMPT = "PREFOPS_TRAINED_ATTEMPT"  # export: the training attempt whose weights it publishes
ENV_TERMINATION_GRACE = "PREFOPS_TERMINATION_GRACE_SECONDS"  # the pod's grace period: torchrun's shutdown follows it
ENV_TRAINER_IMAGE = "PREFOPS_TRAINER_IMAGE"  # the image reference the pod runs, for the model's lineage
ENV_NO_METADATA = "AWS_EC2_METADATA_DISABLED"  # boto3 never asks 169.254.169.254 for credentials or a region


@dataclass(frozen=True)
class ChildSettings:
    """Operator-wide settings that shape children: part of :class:`prefops_operator.config.OperatorConfig`, whose
    flags are built from these fields."""

    default_image: str = setting(
        "ghcr.io/prefops/trainer:0.1.0",
        "trainer image for jobs without spec.resources.image",
        "--default-image",
        "DEFAULT_IMAGE",
    )
    image_pull_policy: str = setting(
        "IfNotPresent", "of trainer pods", "--image-pull-policy", "IMAGE_PULL_POLICY",
        choices=("Always", "IfNotPresent", "Never"),
    )  # fmt: skip
    metrics_port: int = setting(
        9400,
        "PREFOPS_METRICS_PORT of trainer pods, scraped for progress",
        "--trainer-metrics-port",
        "TRAINER_METRICS_PORT",
        rule=_port,
        rule_text="a port number",
    )
    run_as_user: int = setting(
        1000,
        "non-root uid/gid trainer pods run as",
        "--run-as-user",
        "RUN_AS_USER",
        rule=lambda uid: uid > 0,
        rule_text="> 0 (non-root)",
    )
    shm_size_limit: str = setting(
        "16Gi",
        "size limit of trainer pods' memory-backed /dev/shm (it counts against their memory)",
        "--shm-size-limit",
        "SHM_SIZE_LIMIT",
        rule=is_quantity,
        rule_text="a Kubernetes quantity such as 16Gi",
    )
    cache_size_limit: str = setting(
        "200Gi",
        "size limit of trainer pods' /cache emptyDir (model and dataset downloads); the kubelet evicts a pod past it",
        "--cache-size-limit",
        "CACHE_SIZE_LIMIT",
        rule=is_quantity,
        rule_text="a Kubernetes quantity such as 200Gi",
    )
    network_policy: bool = setting(
        False,
        "give each job a NetworkPolicy: only its own pods reach its pods (every port: the rendezvous, and the "
        "ephemeral ports of gloo and NCCL), only --metrics-from namespaces its metrics port",
        "--network-policy",
        "NETWORK_POLICY",
    )
    metrics_from: tuple[str, ...] = setting(
        (),
        "a namespace label (key=value) whose namespaces' pods may reach trainer metrics ports under --network-policy "
        "(repeatable): the monitoring namespace's, and the operator's own for its progress scrapes",
        "--metrics-from",
        "METRICS_FROM",
        rule=lambda labels: all(_LABEL.match(label) for label in labels),
        rule_text="key=value labels",
    )
    master_port: int = 29500  # the torchrun rendezvous port inside the job's own pods: not a setting


def owner_reference(job: Job) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job.meta.name,
        "uid": job.meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(job: Job, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": job.meta.namespace, "labels": labels, "ownerReferences": [owner_reference(job)]}


def trainer_config(job: Job) -> str:
    """The trainer config document (docs/contract.md §2): the job's manifest, parsed by the trainer's spec."""
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": job.meta.name, "namespace": job.meta.namespace, "uid": job.meta.uid},
        "spec": dict(job.spec.raw),
    }
    return str(yaml.dump(doc, Dumper=_DUMPER, sort_keys=False))


def config_map(job: Job) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, config_map_name(job.meta.name), job_labels(job.meta.name)),
        "data": {CONFIG_FILE: trainer_config(job)},
    }


def training_service(job: Job, settings: ChildSettings) -> dict[str, Any]:
    name = job.meta.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, service_name(name), job_labels(name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # rendezvous happens before any readiness
            "selector": {**job_labels(name), "prefops.dev/phase": RENDEZVOUS.pod.value},
            "ports": [{"name": "rendezvous", "port": settings.master_port, "targetPort": settings.master_port}],
        },
    }


def network_policy(job: Job, settings: ChildSettings) -> dict[str, Any]:
    """Ingress to the job's pods: every port from the job's own pods (torchrun's rendezvous, and the ephemeral ports
    gloo and NCCL connect on, which each rank publishes through the rendezvous store), the metrics port only from
    pods in namespaces labelled as ``settings.metrics_from`` says; nothing else. A NetworkPolicy cannot say "the
    same job" for every job at once, so each job gets its own."""
    name = job.meta.name
    same_job = {"podSelector": {"matchLabels": job_labels(name)}}
    scrapers = [{"namespaceSelector": {"matchLabels": dict([label.split("=", 1)])}} for label in settings.metrics_from]
    ingress: list[dict[str, Any]] = [{"from": [same_job]}]
    if scrapers:
        ingress.append({"from": scrapers, "ports": [{"protocol": "TCP", "port": settings.metrics_port}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(job, network_policy_name(name), job_labels(name)),
        "spec": {"podSelector": {"matchLabels": job_labels(name)}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def pod(
    job: Job,
    phase: PodPhase,
    index: int,
    attempt: int,
    settings: ChildSettings,
    trained_attempt: int | None = None,
    sizing: PodSizing | None = None,
) -> dict[str, Any]:
    """Replica ``index`` of ``phase``'s pod group, attempt ``attempt``; an export pod publishes the weights of
    training attempt ``trained_attempt``; ``sizing``: the plan's requests and /cache size for the phase
    (:func:`.admission.pod_sizing`)."""
    name = pod_name(job.meta.name, phase, index, attempt)
    res = job.spec.resources
    meta = _metadata(job, name, pod_labels(job.meta.name, phase, index, attempt))
    _add_queue(meta, job, phase)
    env = _env(job, phase, index, attempt, settings, trained_attempt)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": res.termination_grace_period_seconds,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "fsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(job, phase, index, env, settings, sizing)],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
            {"name": "config", "configMap": {"name": config_map_name(job.meta.name)}},
            # NCCL and dataloaders need more than 64 MiB
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size_limit}},
            # the trainer image's HF_HOME / PREFOPS_CACHE_DIR live under /cache
            {"name": "cache", "emptyDir": {"sizeLimit": (sizing and sizing.cache) or settings.cache_size_limit}},
        ],
    }
    if of_pods(phase).service:
        spec["hostname"], spec["subdomain"] = name, service_name(job.meta.name)
    optional = {
        "nodeSelector": dict(res.node_selector) or None,
        "tolerations": [dict(t) for t in res.tolerations] or None,
        "priorityClassName": res.priority_class_name,
        "schedulerName": res.scheduler_name,
        "serviceAccountName": res.service_account_name,
    }
    spec.update({k: v for k, v in optional.items() if v})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _add_queue(meta: dict[str, Any], job: Job, phase: PodPhase) -> None:
    queue = job.spec.resources.queue_name
    if not queue:
        return
    group = child_name(job.meta.name, phase.value)  # a label value: at most 63 characters too
    meta["labels"].update({KUEUE_QUEUE_LABEL: queue, KUEUE_GROUP_LABEL: group})
    meta["annotations"] = {KUEUE_GROUP_COUNT: str(of_pods(phase).size(job.spec)), VOLCANO_QUEUE: queue}


def _container(
    job: Job, phase: PodPhase, index: int, env: dict[str, str], settings: ChildSettings, sizing: PodSizing | None
) -> dict[str, Any]:
    spec, row = job.spec, of_pods(phase)
    args = row.args(f"{CONFIG_DIR}/{CONFIG_FILE}", index, row.size(spec))
    ports = [{"name": "metrics", "containerPort": settings.metrics_port}]
    if row.service:
        ports.append({"name": "rendezvous", "containerPort": settings.master_port})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": trainer_image(job, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["prefops-trainer"],
        "args": args,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": ports,
        "resources": _resources(job, phase, sizing),
        "volumeMounts": [
            {"name": "tmp", "mountPath": TMP_DIR},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "cache", "mountPath": CACHE_DIR},
        ],
        "securityContext": {
            "readOnlyRootFilesystem": True,  # writable: /cache, /tmp and /dev/shm (emptyDirs)
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.credentials_secret}}]
    return container


def trainer_image(job: Job, settings: ChildSettings) -> str:
    """The image every pod of the job runs: ``spec.resources.image``, else the operator's default."""
    return job.spec.resources.image or settings.default_image


def _env(
    job: Job, phase: PodPhase, index: int, attempt: int, settings: ChildSettings, trained_attempt: int | None
) -> dict[str, str]:
    res = job.spec.resources
    env = {
        ENV_METRICS_PORT: str(settings.metrics_port),
        ENV_METRICS_ADDR: "0.0.0.0",
        ENV_ATTEMPT: str(attempt),
        ENV_TERMINATION_GRACE: str(res.termination_grace_period_seconds),
        ENV_TRAINER_IMAGE: trainer_image(job, settings),
        ENV_NO_METADATA: "true",
    }
    if of_pods(phase).reads_trained and trained_attempt is not None:
        env[ENV_TRAINED_ATTEMPT] = str(trained_attempt)
    if of_pods(phase).processes:
        env[ENV_NPROC] = str(res.nproc_per_node)
    if of_pods(phase).service:
        master = f"{pod_name(job.meta.name, phase, 0, attempt)}.{service_name(job.meta.name)}"
        env.update(
            {
                ENV_NNODES: str(res.nodes),
                ENV_NODE_RANK: str(index),
                ENV_MASTER_ADDR: master,
                ENV_MASTER_PORT: str(settings.master_port),
            }
        )
    return env


def _resources(job: Job, phase: PodPhase, sizing: PodSizing | None) -> dict[str, dict[str, str]]:
    """The job's requests and limits, plus GPUs: every pod of a phase is shaped like one training node, with at
    most the phase's own GPUs (``max_gpus`` of :data:`.phases.PHASES`: one for export, merging LoRA is one process).
    CPU and memory the spec sets neither a request nor a limit for come from the plan (``sizing``), so no pod runs as
    BestEffort."""
    res = job.spec.resources
    gpus = of_pods(phase).gpus(res.gpus_per_node)
    requests, limits = dict(res.requests), dict(res.limits)
    for key, value in (sizing.requests if sizing else {}).items():
        if key not in requests and key not in limits:
            requests[key] = value
    if gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
