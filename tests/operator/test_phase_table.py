"""The phase table (``core/phases.py``) against the other places a phase is named: the trainer's subcommands and
phase metric, the CRD's ``status.phase``, and the children built from each row. A phase added to the table but not
to one of them (docs/development.md, "Add a phase") fails here, naming it."""

from __future__ import annotations

import yaml
from support.kube import ROOT
from support.operator_core import make_job

from prefops_operator.core.children import ChildSettings, pod, training_service
from prefops_operator.core.phases import PHASES, RENDEZVOUS, Phase, PodPhase, phase_plan
from prefops_operator.core.plan import plan
from prefops_operator.core.status import Status
from prefops_operator.core.timefmt import utcnow
from prefops_trainer.adapters.metrics import PHASES as TRAINER_METRIC_PHASES
from prefops_trainer.cli import COMMANDS

SETTINGS = ChildSettings()
CRD = yaml.safe_load((ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml").read_text())


def test_every_phase_has_one_row_and_its_pods_run_a_trainer_subcommand():
    assert [row.pod for row in PHASES] == list(PodPhase)
    assert [row.pod.value for row in PHASES if row.pod.value not in COMMANDS] == []
    assert [row.pod.value for row in PHASES if row.pod.value not in TRAINER_METRIC_PHASES] == []


def test_the_crd_lists_every_status_phase_the_table_knows():
    status = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [p.value for p in Phase]
    assert all(row.status in Phase for row in PHASES)


def test_a_job_runs_the_rows_in_table_order_precompute_only_when_its_loss_needs_a_reference():
    assert phase_plan(make_job(spec={"algorithm": {"name": "dpo"}}).spec) == tuple(row.status for row in PHASES)
    assert phase_plan(make_job(spec={"algorithm": {"name": "simpo"}}).spec) == (Phase.TRAINING, Phase.EXPORTING)


def test_each_rows_pods_get_its_command_gpus_and_group_size():
    job = make_job(spec={"reference": {"workers": 3}, "resources": {"nodes": 2, "gpusPerNode": 4}})
    for row in PHASES:
        status = Status(phase=row.status)
        created = plan(job, status, [], SETTINGS, utcnow()).create_pods
        assert len(created) == row.size(job.spec) == {"precompute": 3, "train": 2, "export": 1}[row.key]
        container = created[-1].manifest["spec"]["containers"][0]
        assert container["args"][0] == row.pod.value
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus == str(row.gpus(4)) == {"precompute": "4", "train": "4", "export": "1"}[row.key]
    precompute = pod(job, PodPhase.PRECOMPUTE, 2, 1, SETTINGS)["spec"]["containers"][0]["args"]
    assert precompute[2:] == ["--shard", "2", "--num-shards", "3"]
    assert training_service(job, SETTINGS)["spec"]["selector"]["prefops.dev/phase"] == RENDEZVOUS.pod.value == "train"
