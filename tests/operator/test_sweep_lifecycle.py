"""PreferenceTrainingSweeps against a real kube-apiserver + etcd + controller-manager, with the operator running as
its ServiceAccount: trials are real PreferenceTrainingJobs, whose pods the kubelet stand-in moves through their
lifecycle, reporting what the trainer reports (docs/contract.md §4, §7): cache hits from precompute, the final
evaluation from training."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from support.jobs import GROUP, PLURAL, VERSION
from support.kube import wait_for
from support.sweeps import sweep_manifest

pytestmark = pytest.mark.integration
SIMPO = {"algorithm": {"name": "simpo"}}
FINISHED = ("Succeeded", "Failed")


class JobWatch:
    """Every event of the namespace's PreferenceTrainingJobs, in the apiserver's order, from a real watch."""

    def __init__(self, custom: Any, namespace: str) -> None:
        import kubernetes

        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.error: Exception | None = None
        self._stopped = False
        self._watch = kubernetes.watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(custom, namespace), daemon=True)

    def _run(self, custom: Any, namespace: str) -> None:
        stream = self._watch.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, timeout_seconds=600
        )
        try:
            for event in stream:
                obj = event["object"]
                self.events.append((event["type"], obj["metadata"]["name"], obj.get("status") or {}))
        except Exception as e:  # the connection closes when the test's namespace goes: only earlier errors count
            if not self._stopped:
                self.error = e

    def __enter__(self) -> JobWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped = True
        self._watch.stop()

    def most_running(self) -> int:
        """The most trial jobs that existed unfinished at once."""
        assert self.error is None, f"the watch failed: {self.error!r}"
        state: dict[str, str] = {}
        most = 0
        for kind, name, status in self.events:
            if kind == "DELETED":
                state.pop(name, None)
            else:
                state[name] = status.get("phase") or "Pending"
            most = max(most, sum(phase not in FINISHED for phase in state.values()))
        return most

    def created_before_reference_ready(self, first: str) -> list[str]:
        """Jobs created before ``first`` had completed its precompute phase."""
        early, ready = [], False
        for kind, name, status in self.events:
            if name == first and ((status.get("phases") or {}).get("precompute") or {}).get("completionTime"):
                ready = True
            if kind == "ADDED" and name != first and not ready:
                early.append(name)
        return early


def finish_phase(jobs, kubelet, namespace, job: str, phase: str, message: str = "", code: int = 0) -> None:
    """Wait for ``job``'s pods of ``phase``, start them, and end them with ``code`` (replica 0 leaves ``message``)."""
    pods = jobs.wait_pods(job, phase, 1, timeout=60)
    for name in sorted(pods):
        kubelet.run(namespace, name)
        kubelet.exit(namespace, name, code, message=message if name.endswith("-0") else "")


def evaluation(accuracy: float, step: int = 40) -> str:
    return json.dumps({"evaluation": {"step": step, "metrics": {"loss": 1 - accuracy, "rewards/accuracies": accuracy}}})


def test_three_trials_sharing_a_reference_run_two_at_a_time_compute_it_once_and_the_best_is_named(
    jobs, sweeps, kubelet, namespace, kube_cluster, start_operator
):
    with JobWatch(kube_cluster.custom(), namespace) as watch:
        start_operator()
        sweeps.create(sweep_manifest("beta"))  # DPO, beta 0.05 / 0.1 / 0.3: one reference cache key; parallelism 2

        jobs.wait_pods("beta-0", "precompute", 1)
        status = sweeps.wait_status("beta", lambda s: s["trials"][0]["phase"] == "Precomputing", "trial 0 running")
        assert [t.get("message") for t in status["trials"][1:]] == [
            "waiting for trial beta-0 to finish the reference pass"
        ] * 2
        finish_phase(jobs, kubelet, namespace, "beta-0", "precompute", json.dumps({"cacheHit": False}))
        finish_phase(jobs, kubelet, namespace, "beta-1", "precompute", json.dumps({"cacheHit": True}))
        status = sweeps.wait_status("beta", lambda s: s["trials"][1]["phase"] == "Training", "trial 1 training")
        assert status["trials"][2]["message"] == "waiting for a free slot (parallelism 2)"
        assert not jobs.exists("beta-2")

        finish_phase(jobs, kubelet, namespace, "beta-0", "train", evaluation(0.62))
        finish_phase(jobs, kubelet, namespace, "beta-0", "export")
        finish_phase(jobs, kubelet, namespace, "beta-2", "precompute", json.dumps({"cacheHit": True}))
        finish_phase(jobs, kubelet, namespace, "beta-2", "train", evaluation(0.91))
        finish_phase(jobs, kubelet, namespace, "beta-1", "train", evaluation(0.75))
        for trial in ("beta-2", "beta-1"):
            finish_phase(jobs, kubelet, namespace, trial, "export")
        status = sweeps.wait_phase("beta", "Succeeded", timeout=60)

    assert watch.most_running() == 2
    assert watch.created_before_reference_ready("beta-0") == []
    assert status["best"] == {"trial": "beta-2", "objective": 0.91, "parameters": {"algorithm.beta": 0.3},
                              "output": "s3://models/beta/beta-2"}  # fmt: skip
    assert [(t["name"], t["phase"], t["objective"], t["step"], t["cacheHit"]) for t in status["trials"]] == [
        ("beta-0", "Succeeded", 0.62, 40, False),
        ("beta-1", "Succeeded", 0.75, 40, True),
        ("beta-2", "Succeeded", 0.91, 40, True),
    ]
    assert jobs.status("beta-2")["evaluation"] == {"step": 40, "metrics": {"loss": 0.09, "rewards/accuracies": 0.91},
                                                   "final": True}  # fmt: skip
    trial = jobs.get("beta-1")
    assert trial["metadata"]["labels"] == {"prefops.dev/sweep": "beta", "prefops.dev/trial-index": "1"}
    assert trial["metadata"]["ownerReferences"][0]["kind"] == "PreferenceTrainingSweep"
    assert (trial["spec"]["algorithm"]["beta"], trial["spec"]["output"]["uri"]) == (0.1, "s3://models/beta/beta-1")
    columns, rows = kube_cluster.table(f"/apis/prefops.dev/v1alpha1/namespaces/{namespace}/preferencetrainingsweeps")
    assert dict(zip(columns, rows[0], strict=True)) | {"Age": "-"} == {
        "Name": "beta", "Phase": "Succeeded", "Trials": 3, "Running": 0, "Succeeded": 3, "Failed": 0, "Best": "beta-2", "Objective": 0.91,
        "Age": "-",
    }  # fmt: skip
    reasons = [r for _, r, _ in sweeps.wait_event("beta", "Normal", "BestTrialFound")]
    assert reasons[0] == "Started" and reasons[-1] == "BestTrialFound"
    assert sorted(reasons[1:-1]) == ["TrialStarted"] * 3 + ["TrialSucceeded"] * 3


def test_a_failed_trial_does_not_stop_the_others_and_a_restarted_operator_carries_on(
    jobs, sweeps, kubelet, namespace, start_operator
):
    first = start_operator()
    sweeps.create(sweep_manifest("tries", {"parallelism": 1}, SIMPO))  # reference-free: train, export
    kubelet_message = "s3://prefs/ultrafeedback.jsonl row 3: field 'chosen' is missing"
    finish_phase(jobs, kubelet, namespace, "tries-0", "train", kubelet_message, code=2)
    jobs.wait_pods("tries-1", "train", 1)
    first.kill()

    start_operator()
    finish_phase(jobs, kubelet, namespace, "tries-1", "train", evaluation(0.7))
    finish_phase(jobs, kubelet, namespace, "tries-1", "export")
    finish_phase(jobs, kubelet, namespace, "tries-2", "train", evaluation(0.6))
    finish_phase(jobs, kubelet, namespace, "tries-2", "export")
    status = sweeps.wait_phase("tries", "Succeeded", timeout=60)
    assert status["counts"] == {"total": 3, "waiting": 0, "running": 0, "suspended": 0, "succeeded": 2, "failed": 1}
    assert status["best"]["trial"] == "tries-1"
    assert (
        status["trials"][0]["phase"] == "Failed"
        and "row 3: field 'chosen' is missing" in status["trials"][0]["message"]
    )
    failed = [(t, m) for t, r, m in sweeps.events("tries") if r == "TrialFailed"]
    assert len(failed) == 1 and failed[0][0] == "Warning" and failed[0][1].startswith("trial tries-0 failed")
    assert sorted(j for j in ("tries-0", "tries-1", "tries-2") if jobs.exists(j)) == ["tries-0", "tries-1", "tries-2"]


def test_suspending_a_sweep_suspends_its_running_trials_and_resuming_resumes_them(
    jobs, sweeps, kubelet, namespace, start_operator
):
    start_operator()
    sweeps.create(sweep_manifest("pause", {"parallelism": 2}, SIMPO))
    for trial in ("pause-0", "pause-1"):
        pod = next(iter(jobs.wait_pods(trial, "train", 1)))
        kubelet.run(namespace, pod)
    sweeps.patch_spec("pause", {"suspend": True})
    status = sweeps.wait_phase("pause", "Suspended")
    for trial in ("pause-0", "pause-1"):
        jobs.wait_phase(trial, "Suspended")
        assert jobs.get(trial)["spec"]["suspend"] is True
    wait_for(lambda: not jobs.pods("pause-0") and not jobs.pods("pause-1"), 30, "the trials' pods deleted")
    status = sweeps.wait_status("pause", lambda s: s["counts"]["suspended"] == 2, "trials suspended")
    assert (status["counts"]["waiting"], jobs.exists("pause-2")) == (1, False)

    sweeps.patch_spec("pause", {"suspend": False})
    sweeps.wait_phase("pause", "Running")
    for trial in ("pause-0", "pause-1"):
        jobs.wait_pods(trial, "train", 1, attempt=2)  # resuming moves every trial to its next attempt
        assert jobs.get(trial)["spec"]["suspend"] is False
    assert not jobs.exists("pause-2")
    assert [r for _, r, _ in sweeps.wait_event("pause", "Normal", "Resumed")][-2:] == ["Suspended", "Resumed"]


def test_deleting_a_sweep_deletes_its_trials_and_their_pods(jobs, sweeps, namespace, kube_cluster, start_operator):
    start_operator()
    sweeps.create(sweep_manifest("doomed", {"parallelism": 3}, SIMPO))
    for trial in ("doomed-0", "doomed-1", "doomed-2"):
        jobs.wait_pods(trial, "train", 1)
    sweeps.delete("doomed")

    def gone() -> bool:
        left = kube_cluster.custom().list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        pods = kube_cluster.core().list_namespaced_pod(namespace).items
        return not left and not pods

    wait_for(gone, 90, "garbage collection of the sweep's trials and their pods")


@pytest.mark.parametrize(
    ("spec", "template", "field", "message"),
    [
        ({"parameters": [{"path": "algorithm.betta", "values": [0.1]}]}, {}, "spec.parameters[0].values[0]",
         "spec.algorithm.betta: unknown field; did you mean 'beta'?"),
        ({"parameters": [{"path": "dataset.truncationMode", "values": ["keep_start", "middle"]}]}, {},
         "spec.parameters[0].values[1]", 'the job schema rejects the trial: create job'),
        ({"parameters": [{"path": "algorithm.name", "values": ["dpo", "kto"]}]}, {}, "spec.parameters[0].values[1]",
         "does not report the objective's metric 'rewards/accuracies'"),
        ({}, {"dataset": {"evalSplit": None}}, "spec.template.dataset.evalSplit",
         "a sweep ranks its trials by an evaluation on this split"),
    ],
    ids=["unknown-path", "rejected-value", "objective-not-reported", "no-eval-split"],
)  # fmt: skip
def test_a_sweep_with_invalid_trials_fails_naming_the_field_and_creates_no_trial(
    jobs, sweeps, namespace, kube_cluster, start_operator, spec, template, field, message
):
    start_operator()
    manifest = sweep_manifest("typo", spec, template)
    sweeps.create(manifest)
    status = sweeps.wait_phase("typo", "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert failed["message"].startswith(field) and message in failed["message"], failed["message"]
    sweeps.wait_event("typo", "Warning", "InvalidSpec")
    assert kube_cluster.custom().list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"] == []
