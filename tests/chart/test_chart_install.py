"""`helm install` and `helm uninstall` (the Helm 4 SDK, as the helm CLI runs them) against a real kube-apiserver of
this module's own, since these tests create and delete the CRD: the CRD the apiserver stores is the repository's,
`crds.keep` decides whether uninstalling deletes it with every job, and the README's way to adopt a CRD applied
by hand works."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import helm_python
import kubernetes
import pytest
from support.chart_rendering import CHART, crd_file_specs
from support.jobs import Jobs, job_manifest
from support.kube import KubeCluster, wait_for

pytestmark = pytest.mark.integration

RELEASE, NAMESPACE = "prefops", "prefops-system"
CRD = "preferencetrainingjobs.prefops.dev"
SWEEP_CRD = "preferencetrainingsweeps.prefops.dev"


@pytest.fixture(scope="module")
def cluster() -> Iterator[KubeCluster]:
    """etcd + kube-apiserver only: Helm needs no controller (CRD deletion is the apiserver's own)."""
    with KubeCluster.start(controller_manager=False, audit=False) as cluster:
        yield cluster


@pytest.fixture
def helm(cluster: KubeCluster) -> Iterator[helm_python.Config]:
    """A Helm client as cluster admin; the test starts without the CRD or the release, and ends without them."""
    remove_crd(cluster)
    with helm_python.Config(kubeconfig_path=cluster.admin_kubeconfig, namespace=NAMESPACE) as config:
        yield config
        config.uninstall(RELEASE, ignore_not_found=True)
    remove_crd(cluster)


def extensions(cluster: KubeCluster) -> Any:
    return kubernetes.client.ApiextensionsV1Api(cluster.admin_client())


def stored_crd(cluster: KubeCluster, name: str = CRD) -> dict[str, Any] | None:
    try:
        return dict(
            cluster.admin_client().sanitize_for_serialization(extensions(cluster).read_custom_resource_definition(name))
        )
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def remove_crd(cluster: KubeCluster) -> None:
    for name in (CRD, SWEEP_CRD):
        if stored_crd(cluster, name):
            extensions(cluster).delete_custom_resource_definition(name)
            wait_for(lambda name=name: stored_crd(cluster, name) is None, 60, f"CRD {name} deleted")


def install(helm: helm_python.Config, values: dict[str, Any] | None = None) -> dict[str, Any]:
    return helm.install(str(CHART), RELEASE, values or {}, namespace=NAMESPACE, create_namespace=True)


def create_job(cluster: KubeCluster, name: str) -> Jobs:
    jobs = Jobs(cluster.custom(), cluster.core(), "default")
    wait_for(lambda: _established(stored_crd(cluster)), 30, "the CRD established")
    jobs.create(job_manifest(name))
    return jobs


def _established(crd: dict[str, Any] | None) -> bool:
    return bool(crd) and any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])


def test_helm_installs_the_repository_crds_as_the_apiserver_stores_them_from_crds(cluster, helm):
    expected = {
        name: cluster.admin_client().sanitize_for_serialization(
            extensions(cluster).create_custom_resource_definition(spec, dry_run="All")
        )
        for name, spec in crd_file_specs().items()
    }
    release = install(helm)
    assert release["status"] == "deployed"
    assert "kubectl -n prefops-system rollout status deployment/prefops" in release["notes"]
    assert set(expected) == {CRD, SWEEP_CRD}
    for name, crd in expected.items():
        assert stored_crd(cluster, name)["spec"] == crd["spec"], name
    apps = kubernetes.client.AppsV1Api(cluster.admin_client())
    assert apps.read_namespaced_deployment(RELEASE, NAMESPACE).spec.replicas == 1


def test_uninstall_keeps_the_crd_and_every_job_by_default(cluster, helm):
    install(helm)
    jobs = create_job(cluster, "survivor")
    result = helm.uninstall(RELEASE)
    assert f"[CustomResourceDefinition] {CRD}" in result["info"]
    assert (
        f"[CustomResourceDefinition] {SWEEP_CRD}" in result["info"]
        and "kept due to the resource policy" in result["info"]
    )
    apps = kubernetes.client.AppsV1Api(cluster.admin_client())
    assert apps.list_namespaced_deployment(NAMESPACE).items == []
    assert stored_crd(cluster) is not None
    assert jobs.exists("survivor")


def test_uninstall_deletes_the_crd_and_every_job_when_crds_keep_is_off(cluster, helm):
    install(helm, {"crds": {"keep": False}})
    jobs = create_job(cluster, "doomed")
    helm.uninstall(RELEASE)
    wait_for(lambda: stored_crd(cluster) is None, 60, "the CRD deleted by helm uninstall")
    wait_for(lambda: stored_crd(cluster, SWEEP_CRD) is None, 60, "the sweep CRD deleted by helm uninstall")
    with pytest.raises(kubernetes.client.ApiException, match="404"):
        jobs.get("doomed")


def test_a_crd_applied_by_hand_is_adopted_after_the_readmes_label_and_annotate_commands(cluster, helm):
    for spec in crd_file_specs().values():  # kubectl apply -f crds/
        extensions(cluster).create_custom_resource_definition(spec)
    with pytest.raises(helm_python.HelmError, match=r"invalid ownership metadata|cannot be imported"):
        install(helm)
    readme = (CHART / "README.md").read_text()
    label = re.search(r"kubectl label crd [^=]+ (\S+)=(\S+)", readme)
    annotations = re.findall(r"(meta\.helm\.sh/[\w-]+)=(\S+)", readme)
    assert label and len(annotations) == 2
    patch = {"metadata": {"labels": {label[1]: label[2]}, "annotations": dict(annotations)}}
    for name in (CRD, SWEEP_CRD):
        extensions(cluster).patch_custom_resource_definition(name, patch)
    helm.uninstall(RELEASE, ignore_not_found=True)  # the failed install left a release record
    assert install(helm)["status"] == "deployed"
    assert stored_crd(cluster)["metadata"]["labels"]["helm.sh/chart"] == "prefops-0.1.0"
