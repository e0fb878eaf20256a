"""Children built from a job: names, labels, owner references, the trainer pod contract. Pure, no server."""

from __future__ import annotations

import pytest
import yaml
from support.operator_core import make_job
from support.pod_security import restricted_violations

from prefops_operator.core.children import (
    ChildSettings,
    config_map,
    network_policy,
    pod,
    trainer_config,
    training_service,
)
from prefops_operator.core.naming import PodPhase, child_name, pod_name

SETTINGS = ChildSettings(default_image="registry.example/prefops-trainer:1.2.3")
CLUSTER = {
    "resources": {
        "nodes": 2,
        "gpusPerNode": 8,
        "requests": {"cpu": "32", "memory": "400Gi"},
        "limits": {"memory": "500Gi"},
        "nodeSelector": {"gpu": "h100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "reference": {"workers": 4},
}


def env(manifest):
    return {e["name"]: e["value"] for e in manifest["spec"]["containers"][0]["env"]}


def test_training_pods_run_the_trainer_with_the_rendezvous_environment_of_the_contract():
    job = make_job(spec=CLUSTER)
    p = pod(job, PodPhase.TRAIN, 1, attempt=3, settings=SETTINGS)
    c = p["spec"]["containers"][0]
    assert c["command"] == ["prefops-trainer"]
    assert c["args"] == ["train", "/etc/prefops/job.yaml"]
    assert env(p) == {
        "PREFOPS_NNODES": "2",
        "PREFOPS_NODE_RANK": "1",
        "PREFOPS_NPROC_PER_NODE": "8",
        "PREFOPS_MASTER_ADDR": "qwen-dpo-train-a3-0.qwen-dpo-train",  # pod 0 of the same attempt
        "PREFOPS_MASTER_PORT": "29500",
        "PREFOPS_METRICS_PORT": "9400",
        "PREFOPS_METRICS_ADDR": "0.0.0.0",
        "PREFOPS_ATTEMPT": "3",
        "PREFOPS_TERMINATION_GRACE_SECONDS": "300",
        "PREFOPS_TRAINER_IMAGE": "registry.example/prefops-trainer:1.2.3",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    assert p["metadata"]["name"] == "qwen-dpo-train-a3-1"
    assert (p["spec"]["hostname"], p["spec"]["subdomain"]) == ("qwen-dpo-train-a3-1", "qwen-dpo-train")
    assert c["resources"] == {
        "requests": {"cpu": "32", "memory": "400Gi", "nvidia.com/gpu": "8"},
        "limits": {"memory": "500Gi", "nvidia.com/gpu": "8"},
    }
    assert p["spec"]["nodeSelector"] == {"gpu": "h100"}
    assert p["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


@pytest.mark.parametrize("phase", list(PodPhase))
def test_every_pod_is_told_the_image_it_runs_for_the_models_lineage(phase):
    own = make_job(spec={"resources": {"image": "registry.example/custom@sha256:abc"}})
    for job, image in ((make_job(), SETTINGS.default_image), (own, "registry.example/custom@sha256:abc")):
        p = pod(job, phase, 0, attempt=1, settings=SETTINGS)
        assert p["spec"]["containers"][0]["image"] == env(p)["PREFOPS_TRAINER_IMAGE"] == image


@pytest.mark.parametrize("phase", list(PodPhase))
def test_no_pod_asks_the_instance_metadata_service_whatever_its_credentials_secret_holds(phase):
    for job in (make_job(), make_job(spec={"storage": {"credentialsSecret": "s3-creds"}})):
        assert env(pod(job, phase, 0, attempt=1, settings=SETTINGS))["AWS_EC2_METADATA_DISABLED"] == "true"


def test_the_grace_period_is_the_specs_and_every_pod_is_told_it():
    job = make_job(spec={"resources": {"terminationGracePeriodSeconds": 900}})
    for phase in PodPhase:
        p = pod(job, phase, 0, attempt=1, settings=SETTINGS)
        assert p["spec"]["terminationGracePeriodSeconds"] == 900
        assert env(p)["PREFOPS_TERMINATION_GRACE_SECONDS"] == "900"
    assert pod(make_job(), PodPhase.TRAIN, 0, 1, SETTINGS)["spec"]["terminationGracePeriodSeconds"] == 300


def test_export_pods_are_told_which_training_attempt_to_publish():
    job = make_job()
    assert env(pod(job, PodPhase.EXPORT, 0, 5, SETTINGS, trained_attempt=4))["PREFOPS_TRAINED_ATTEMPT"] == "4"
    assert "PREFOPS_TRAINED_ATTEMPT" not in env(pod(job, PodPhase.TRAIN, 0, 5, SETTINGS, trained_attempt=4))
    assert "PREFOPS_TRAINED_ATTEMPT" not in env(pod(job, PodPhase.EXPORT, 0, 5, SETTINGS))  # a status of 0.x


def test_pods_are_labelled_owned_by_the_job_and_never_restarted_by_the_kubelet():
    job = make_job()
    p = pod(job, PodPhase.TRAIN, 0, attempt=2, settings=SETTINGS)
    assert p["metadata"]["labels"] == {
        "prefops.dev/job-name": "qwen-dpo",
        "prefops.dev/phase": "train",
        "prefops.dev/replica-index": "0",
        "prefops.dev/attempt": "2",
    }
    assert p["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "prefops.dev/v1alpha1",
            "kind": "PreferenceTrainingJob",
            "name": "qwen-dpo",
            "uid": "uid-1234",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert p["metadata"]["namespace"] == "team-a"
    assert p["spec"]["restartPolicy"] == "Never"


def test_pods_run_as_non_root_without_privileges_or_an_api_token():
    p = pod(make_job(), PodPhase.TRAIN, 0, attempt=1, settings=SETTINGS)
    assert p["spec"]["securityContext"]["runAsNonRoot"] is True
    assert p["spec"]["securityContext"]["runAsUser"] == 1000
    assert p["spec"]["automountServiceAccountToken"] is False
    c = p["spec"]["containers"][0]
    assert c["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def test_on_their_read_only_root_pods_write_only_to_empty_dirs_and_tmp_is_size_limited():
    p = pod(make_job(), PodPhase.TRAIN, 0, attempt=1, settings=SETTINGS)
    volumes = {v["name"]: v for v in p["spec"]["volumes"]}
    writable = [m for m in p["spec"]["containers"][0]["volumeMounts"] if not m.get("readOnly")]
    assert {m["mountPath"] for m in writable} == {"/tmp", "/cache", "/dev/shm"}
    assert all("emptyDir" in volumes[m["name"]] for m in writable)
    tmp = next(volumes[m["name"]] for m in writable if m["mountPath"] == "/tmp")
    assert tmp["emptyDir"]["sizeLimit"] == "1Gi"


def test_storage_credentials_reach_the_pod_only_through_env_from_the_named_secret():
    with_secret = pod(make_job(), PodPhase.PRECOMPUTE, 0, attempt=1, settings=SETTINGS)["spec"]["containers"][0]
    assert with_secret["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    # no credential, endpoint or region in env: only the switch that keeps boto3 off the metadata service
    assert [e for e in with_secret["env"] if e["name"].startswith("AWS_")] == [
        {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"}
    ]
    job = make_job(spec={"storage": {"uri": "s3://work/x", "credentialsSecret": None}})
    assert "envFrom" not in pod(job, PodPhase.PRECOMPUTE, 0, attempt=1, settings=SETTINGS)["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("resources", "processes"),
    [({"gpusPerNode": 8}, "8"), ({"gpusPerNode": 8, "processesPerNode": 2}, "2"), ({"gpusPerNode": 0}, "1")],
)
def test_precompute_pods_run_one_process_per_gpu_each_pod_on_its_own(resources, processes):
    job = make_job(spec={"resources": {"nodes": 2, **resources}, "reference": {"workers": 3}})
    p = pod(job, PodPhase.PRECOMPUTE, 2, 1, SETTINGS)
    assert env(p)["PREFOPS_NPROC_PER_NODE"] == processes, "the trainer starts this many processes in the pod"
    assert not {"PREFOPS_NNODES", "PREFOPS_NODE_RANK", "PREFOPS_MASTER_ADDR"} & set(env(p)), (
        "the precompute pods share no rendezvous: each computes its own shard"
    )
    gpus = p["spec"]["containers"][0]["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert gpus == (str(resources["gpusPerNode"]) if resources["gpusPerNode"] else None)


def test_precompute_pods_get_their_shard_and_the_number_of_shards():
    job = make_job(spec=CLUSTER)
    args = [pod(job, PodPhase.PRECOMPUTE, i, 1, SETTINGS)["spec"]["containers"][0]["args"] for i in range(4)]
    assert args[2] == ["precompute", "/etc/prefops/job.yaml", "--shard", "2", "--num-shards", "4"]
    assert "hostname" not in pod(job, PodPhase.PRECOMPUTE, 0, 1, SETTINGS)["spec"]


def test_the_export_pod_asks_for_one_gpu_at_most_and_cpu_jobs_for_none():
    gpu = pod(make_job(spec=CLUSTER), PodPhase.EXPORT, 0, 1, SETTINGS)["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1"
    cpu_job = make_job(spec={"resources": {"gpusPerNode": 0}})
    assert pod(cpu_job, PodPhase.TRAIN, 0, 1, SETTINGS)["spec"]["containers"][0]["resources"] == {}


def test_the_job_image_wins_over_the_operator_default():
    assert pod(make_job(), PodPhase.TRAIN, 0, 1, SETTINGS)["spec"]["containers"][0]["image"] == SETTINGS.default_image
    job = make_job(spec={"resources": {"image": "mine/trainer:dev"}})
    assert pod(job, PodPhase.TRAIN, 0, 1, SETTINGS)["spec"]["containers"][0]["image"] == "mine/trainer:dev"


def test_a_queue_name_adds_kueue_pod_group_labels_and_the_volcano_queue():
    job = make_job(spec={"resources": {"nodes": 4, "queueName": "gpu-queue"}})
    meta = pod(job, PodPhase.TRAIN, 0, 1, SETTINGS)["metadata"]
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert meta["labels"]["kueue.x-k8s.io/pod-group-name"] == "qwen-dpo-train"
    long = make_job(name="q" * 63, spec={"resources": {"queueName": "gpu-queue"}})
    assert (
        len(pod(long, PodPhase.PRECOMPUTE, 0, 1, SETTINGS)["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"]) <= 63
    )
    assert meta["annotations"] == {
        "kueue.x-k8s.io/pod-group-total-count": "4",
        "scheduling.volcano.sh/queue-name": "gpu-queue",
    }


def test_the_headless_service_selects_the_training_pods_for_rendezvous():
    svc = training_service(make_job(), SETTINGS)
    assert svc["metadata"]["name"] == "qwen-dpo-train"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"prefops.dev/job-name": "qwen-dpo", "prefops.dev/phase": "train"}
    assert svc["spec"]["ports"][0]["port"] == 29500


def test_the_config_map_holds_the_job_manifest_for_the_trainer():
    job = make_job()
    cm = config_map(job)
    assert cm["metadata"]["name"] == "qwen-dpo-config"
    doc = yaml.safe_load(cm["data"]["job.yaml"])
    assert doc == yaml.safe_load(trainer_config(job))
    assert doc["metadata"] == {"name": "qwen-dpo", "namespace": "team-a", "uid": "uid-1234"}
    assert doc["spec"] == dict(job.spec.raw)


@pytest.mark.parametrize("length", [1, 40, 50, 63])
def test_child_names_are_deterministic_dns_labels_of_at_most_63_characters(length):
    job = "j" * length
    pods = [(phase, i, a) for phase in PodPhase for i in (0, 7, 123) for a in (1, 12, 100)]
    names = [pod_name(job, *p) for p in pods] + [child_name(job, "config")]
    assert all(len(n) <= 63 and n[0].isalpha() and not n.endswith("-") for n in names)
    assert len(set(names)) == len(names)
    assert names == [pod_name(job, *p) for p in pods] + [child_name(job, "config")]


def test_long_job_names_keep_a_readable_prefix_and_differ_by_hash():
    a, b = "a" * 60 + "xyz", "a" * 60 + "xyw"
    assert pod_name(a, PodPhase.PRECOMPUTE, 0, 1).startswith("aaaa")
    assert pod_name(a, PodPhase.PRECOMPUTE, 0, 1) != pod_name(b, PodPhase.PRECOMPUTE, 0, 1)
    assert pod_name("short", PodPhase.TRAIN, 0, 1) == "short-train-a1-0"
    assert pod_name("short", PodPhase.TRAIN, 0, 2) == "short-train-a2-0"  # each attempt's pods have their own names


EVERY_OPTION = {
    **CLUSTER,
    "resources": {**CLUSTER["resources"], "queueName": "gpu-queue", "schedulerName": "volcano",
                  "priorityClassName": "high", "serviceAccountName": "trainer"},
}  # fmt: skip


@pytest.mark.parametrize("phase", list(PodPhase))
def test_trainer_pods_satisfy_the_restricted_pod_security_standard(phase):
    p = pod(make_job(spec=EVERY_OPTION), phase, 0, attempt=1, settings=SETTINGS)
    assert restricted_violations(p) == []


def test_the_pod_security_check_catches_what_restricted_forbids():
    p = pod(make_job(), PodPhase.TRAIN, 0, attempt=1, settings=SETTINGS)
    p["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    del p["spec"]["securityContext"]["seccompProfile"]
    p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]
    assert restricted_violations(p) == [
        "volume host: type not allowed",
        "trainer: seccompProfile must be RuntimeDefault or Localhost, got None",
        "trainer: capabilities may add only NET_BIND_SERVICE",
    ]


def test_the_scratch_volumes_are_bounded_by_the_operators_size_limits():
    settings = ChildSettings(shm_size_limit="8Gi", cache_size_limit="500Gi")
    volumes = {v["name"]: v for v in pod(make_job(), PodPhase.TRAIN, 0, 1, settings)["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert volumes["cache"]["emptyDir"] == {"sizeLimit": "500Gi"}
    defaults = {v["name"]: v for v in pod(make_job(), PodPhase.TRAIN, 0, 1, ChildSettings())["spec"]["volumes"]}
    assert (defaults["dshm"]["emptyDir"]["sizeLimit"], defaults["cache"]["emptyDir"]["sizeLimit"]) == ("16Gi", "200Gi")


def test_the_network_policy_lets_the_jobs_pods_reach_each_other_on_every_port_and_only_named_namespaces_scrape():
    settings = ChildSettings(metrics_from=("kubernetes.io/metadata.name=monitoring", "team=ml-ops"))
    policy = network_policy(make_job(), settings)
    assert policy["metadata"]["name"] == "qwen-dpo-ingress"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"prefops.dev/job-name": "qwen-dpo"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rendezvous, metrics = policy["spec"]["ingress"]
    # no ports: torchrun's rendezvous, and the ephemeral ports gloo and NCCL connect on (each rank publishes its own
    # through the rendezvous store), are all reachable from the job's own pods, and only from them
    assert rendezvous == {"from": [{"podSelector": {"matchLabels": {"prefops.dev/job-name": "qwen-dpo"}}}]}
    assert metrics == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
                 {"namespaceSelector": {"matchLabels": {"team": "ml-ops"}}}],
        "ports": [{"protocol": "TCP", "port": 9400}],
    }  # fmt: skip
    assert network_policy(make_job(), ChildSettings())["spec"]["ingress"] == [rendezvous]  # no scrapers: none
