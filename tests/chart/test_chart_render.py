"""The chart rendered by the real Helm engine (no server): the operator Deployment, its flags as the operator
parses them, RBAC equal to operator/rbac/operator.yaml, the CRD equal to crds/, the monitors, the dashboard, NOTES,
packaging. The same value sets go through the apiserver in test_chart_apiserver.py."""

from __future__ import annotations

import base64
import json
import re
import subprocess

import helm_python
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from support.chart_rendering import (
    CHART,
    NAMESPACE,
    ROOT,
    VALUE_SETS,
    args,
    chart,
    container,
    crd_file_spec,
    crd_file_specs,
    load_all,
    render,
)
from support.operator_core import make_job
from support.pod_security import restricted_violations

from prefops_operator.config import OperatorConfig
from prefops_operator.core.children import ChildSettings, network_policy, pod
from prefops_operator.core.naming import PodPhase
from prefops_operator.sweep_handlers import WEBHOOK_ID


def operator_config(values: dict) -> OperatorConfig:
    return OperatorConfig.from_args(container(render(values))["args"], env={})


def manual_rbac() -> list[dict]:
    docs = yaml.safe_load_all((ROOT / "operator" / "rbac" / "operator.yaml").read_text())
    return [d for d in docs if d]


def rules(obj: dict) -> list[dict]:
    return [{k: sorted(v) for k, v in rule.items()} for rule in obj["rules"]]


# -- the operator Deployment -----------------------------------------------------------------------------------


def test_the_operator_runs_as_one_replica_replaced_with_recreate():
    spec = render().one("Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_the_operator_runs_as_the_images_non_root_user_with_a_read_only_root_filesystem():
    rendered = render()
    pod_spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    ctx = container(rendered)["securityContext"]
    with (ROOT / "images" / "operator" / "Dockerfile").open("rb") as f:
        structure = DockerfileParser(fileobj=f).structure
    image_uid = next(i["value"] for i in reversed(structure) if i["instruction"] == "USER").split(":")[0]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] == int(image_uid)
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    # the only writable path, as the image expects
    assert {"name": "tmp", "mountPath": "/tmp"} in container(rendered)["volumeMounts"]
    assert {v["name"]: v for v in pod_spec["volumes"]}["tmp"]["emptyDir"]


def test_the_operator_pod_satisfies_the_restricted_pod_security_standard():
    assert restricted_violations({"spec": render().one("Deployment")["spec"]["template"]["spec"]}) == []


def test_the_operator_container_requests_cpu_and_memory():
    requests = container(render())["resources"]["requests"]
    assert set(requests) == {"cpu", "memory"}
    custom = container(render(VALUE_SETS["tuned"]))["resources"]
    assert custom == VALUE_SETS["tuned"]["resources"]


@pytest.mark.parametrize("values", [VALUE_SETS["defaults"], VALUE_SETS["tuned"]], ids=["defaults", "tuned"])
def test_the_liveness_probe_asks_the_operators_health_port_for_healthz(values):
    rendered = render(values)
    operator = container(rendered)
    probe = operator["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == operator_config(values).health_port
    assert ports["metrics"] == operator_config(values).metrics_port


def test_the_default_flags_are_the_operators_own_defaults_and_the_chart_app_version():
    config = operator_config({})
    app_version = chart().metadata["appVersion"]
    assert config.namespaces == ()
    assert config.children.default_image == f"ghcr.io/prefops/trainer:{app_version}" == ChildSettings().default_image
    assert container(render())["image"] == f"ghcr.io/prefops/operator:{app_version}"
    assert config == OperatorConfig()  # every other setting too


def test_image_values_reach_the_operator_image_and_its_trainer_pods():
    values = VALUE_SETS["images"]
    rendered = render(values)
    config = operator_config(values)
    assert container(rendered)["image"] == "registry.example.com/ml/prefops-operator@sha256:" + "a" * 64
    assert container(rendered)["imagePullPolicy"] == "Always"
    assert rendered.one("Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    trainer = pod(make_job("dpo"), PodPhase.TRAIN, 0, 1, config.children)["spec"]["containers"][0]
    assert trainer["image"] == "registry.example.com/ml/prefops-trainer:0.1.0-cu128"
    assert trainer["imagePullPolicy"] == "Always"
    assert {"name": "metrics", "containerPort": 9500} in trainer["ports"]
    assert config.children.run_as_user == 2000


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_flag_the_chart_passes_is_one_the_operator_accepts(name):
    values = VALUE_SETS[name]
    config = operator_config(values)  # argparse exits on an unknown flag or a bad value
    assert config.namespaces == tuple(values.get("watchNamespaces", ()))


def test_operator_values_reach_its_flags():
    config = operator_config(VALUE_SETS["tuned"])
    assert (config.metrics_port, config.health_port, config.workers) == (9080, 9081, 4)
    assert (config.progress_interval, config.scrape_timeout, config.verbose) == (30, 5, True)
    assert args(render(VALUE_SETS["tuned"]))["--bind-address"] == ["0.0.0.0"]


def test_pod_settings_reach_the_operator_pod():
    values = VALUE_SETS["tuned"]
    template = render(values).one("Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"] == values["podAnnotations"]
    assert template["metadata"]["labels"]["team"] == "ml"
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert template["spec"][key] == values[key]


# -- names -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "values", "expected"),
    [
        ("prefops", {}, "prefops"),
        ("ml", {}, "ml-prefops"),
        ("ml", {"fullnameOverride": "ptj-operator"}, "ptj-operator"),
        ("x" * 70, {}, "x" * 63),
    ],
)
def test_objects_are_named_after_the_release(release, values, expected):
    rendered = render(values, name=release)
    assert rendered.one("Deployment")["metadata"]["name"] == expected
    assert rendered.one("ServiceAccount")["metadata"]["name"] == expected
    assert rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == expected


def test_every_object_carries_the_standard_labels():
    for obj in render(VALUE_SETS["monitoring"]).objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "prefops", obj["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", obj["kind"]
        assert labels["helm.sh/chart"] == "prefops-0.1.0", obj["kind"]


# -- RBAC ------------------------------------------------------------------------------------------------------


def test_the_cluster_role_grants_exactly_the_rules_of_the_operators_rbac_manifest():
    rendered = render()
    manual = next(d for d in manual_rbac() if d["kind"] == "ClusterRole")
    assert rules(rendered.one("ClusterRole")) == rules(manual)
    binding = rendered.one("ClusterRoleBinding")
    account = rendered.one("ServiceAccount")["metadata"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": rendered.one("ClusterRole")["metadata"]["name"]}  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}]


def test_watching_some_namespaces_grants_a_role_in_each_of_them_and_cluster_wide_only_reading_nodes():
    rendered = render(VALUE_SETS["namespaced"])
    manual = next(d for d in manual_rbac() if d["kind"] == "ClusterRole")
    namespaced = [r for r in manual["rules"] if r["resources"] != ["nodes"]]
    nodes = rendered.one("ClusterRole")
    assert nodes["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}]
    assert rendered.one("ClusterRoleBinding")["roleRef"]["name"] == nodes["metadata"]["name"]
    roles, bindings = rendered.all("Role"), rendered.all("RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["chart-team-a", "chart-team-b"]
    assert all(rules(role) == rules({"rules": namespaced}) for role in roles)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["chart-team-a", "chart-team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prefops", "namespace": NAMESPACE}]
    assert args(rendered)["--namespace"] == ["chart-team-a", "chart-team-b"]


def test_rbac_and_the_service_account_can_be_left_to_the_user():
    rendered = render(VALUE_SETS["bring-your-own-account"])
    assert not rendered.kinds() & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing-operator"


# -- the CRD ---------------------------------------------------------------------------------------------------


def test_the_charts_crd_file_is_a_byte_for_byte_copy_of_the_repository_crd():
    repo = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    copies = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    assert copies == repo
    for name in repo:
        assert (CHART / "files" / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes()


def test_the_rendered_crds_are_the_repositorys_jobs_and_sweeps_crds_with_the_charts_labels():
    rendered = {crd["metadata"]["name"]: crd for crd in render().all("CustomResourceDefinition")}
    originals = crd_file_specs()
    assert (
        set(rendered)
        == set(originals)
        == {"preferencetrainingjobs.prefops.dev", "preferencetrainingsweeps.prefops.dev"}
    )
    for name, crd in rendered.items():
        assert crd["spec"] == originals[name]["spec"], name
        assert originals[name]["metadata"]["labels"].items() <= crd["metadata"]["labels"].items(), name


def test_the_crds_are_kept_on_uninstall_unless_switched_off():
    kept = render().all("CustomResourceDefinition")
    assert len(kept) == 2 and all(c["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"} for c in kept)
    assert all(
        "annotations" not in c["metadata"] for c in render(VALUE_SETS["crd-not-kept"]).all("CustomResourceDefinition")
    )
    assert "CustomResourceDefinition" not in render(VALUE_SETS["no-crd"]).kinds()


# -- metrics, monitors, dashboards -----------------------------------------------------------------------------


def test_monitors_and_the_dashboard_are_off_by_default():
    assert not render().kinds() & {"ServiceMonitor", "PodMonitor", "ConfigMap"}


def test_the_service_monitor_scrapes_the_operators_metrics_port_through_the_service():
    rendered = render(VALUE_SETS["monitoring"])
    monitor, service = rendered.one("ServiceMonitor"), rendered.one("Service")
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] and port["port"] == 9090
    assert port["targetPort"] in {p["name"] for p in container(rendered)["ports"]}
    assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "1m")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_a_service_monitor_without_the_metrics_service_is_refused():
    values = {"serviceMonitor": {"enabled": True}, "metrics": {"service": {"enabled": False}}}
    with pytest.raises(helm_python.HelmRenderError, match=r"serviceMonitor\.enabled needs metrics\.service\.enabled"):
        render(values)


def matches(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions with In/NotIn/Exists/DoesNotExist)."""
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok &= {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
               "Exists": key in labels, "DoesNotExist": key not in labels}[op]  # fmt: skip
    return ok


@pytest.mark.parametrize("phase", list(PodPhase))
def test_the_pod_monitor_selects_the_operators_trainer_pods_on_their_metrics_port(phase):
    values = {**VALUE_SETS["images"], "podMonitor": {"enabled": True}}
    monitor = render(values).one("PodMonitor")["spec"]
    trainer = pod(make_job("dpo"), phase, 0, 1, operator_config(values).children)  # as the operator builds them
    (endpoint,) = monitor["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in trainer["spec"]["containers"][0]["ports"]}
    assert matches(monitor["selector"], trainer["metadata"]["labels"])
    assert not matches(monitor["selector"], {"app.kubernetes.io/name": "prefops"})  # not the operator itself
    assert ports[endpoint["port"]] == values["trainer"]["metricsPort"]
    assert endpoint["path"] == "/metrics"


def test_the_pod_monitor_looks_in_every_namespace_or_only_the_watched_ones():
    assert render({"podMonitor": {"enabled": True}}).one("PodMonitor")["spec"]["namespaceSelector"] == {"any": True}
    namespaced = render(VALUE_SETS["namespaced-monitoring"]).one("PodMonitor")["spec"]["namespaceSelector"]
    assert namespaced == {"matchNames": ["chart-team-a"]}


def test_an_empty_scrape_timeout_leaves_prometheus_default():
    (endpoint,) = render(VALUE_SETS["monitoring"]).one("PodMonitor")["spec"]["podMetricsEndpoints"]
    assert "scrapeTimeout" not in endpoint and endpoint["interval"] == "15s"


def test_the_dashboard_configmap_carries_the_grafana_dashboard_for_the_sidecar():
    rendered = render(VALUE_SETS["dashboards"])
    configmap = rendered.one("ConfigMap")
    assert configmap["metadata"]["namespace"] == "chart-monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "prefops"}
    shipped = (CHART / "dashboards" / "prefops.json").read_text()
    assert configmap["data"]["prefops.json"] == shipped
    assert json.loads(configmap["data"]["prefops.json"])["panels"]


def test_the_dashboard_label_follows_the_sidecars_settings():
    values = {"dashboards": {"enabled": True, "label": "grafana.com/dashboard", "labelValue": "prefops"}}
    labels = render(values).one("ConfigMap")["metadata"]["labels"]
    assert labels["grafana.com/dashboard"] == "prefops" and "grafana_dashboard" not in labels


# -- NOTES.txt, values, packaging ------------------------------------------------------------------------------


def test_the_notes_give_the_next_commands_for_the_release():
    notes = render().notes
    assert "kubectl -n prefops-system rollout status deployment/prefops" in notes
    assert "kubectl -n default get ptj -w" in notes
    assert "port-forward service/prefops-metrics 8080" in notes
    assert "keeps the CRDs" in notes
    assert "kubectl -n default get ptsweep" in notes


def test_the_notes_follow_the_watched_namespaces_and_the_crd_switches():
    namespaced = render(VALUE_SETS["namespaced"]).notes
    assert "chart-team-a, chart-team-b only" in namespaced
    assert "kubectl -n chart-team-a apply -f examples/dpo-lora-s3.yaml" in namespaced
    assert "kubectl apply -f crds/" in render(VALUE_SETS["no-crd"]).notes
    assert (
        "deletes the CRDs and every PreferenceTrainingJob and PreferenceTrainingSweep"
        in render(VALUE_SETS["crd-not-kept"]).notes
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"workers": 0}}, r"/operator/workers.*minimum"),
        ({"image": {"pullPolicy": "Sometimes"}}, r"/image/pullPolicy"),
        ({"watchNamespaces": ["Team_A"]}, r"/watchNamespaces/0"),
        ({"watchNamespace": ["team-a"]}, r"additional properties 'watchNamespace' not allowed"),
        ({"crds": {"keep": "yes"}}, r"/crds/keep.*boolean"),
        ({"serviceMonitor": {"interval": "30 seconds"}}, r"/serviceMonitor/interval"),
        ({"image": {"digest": "latest"}}, r"/image/digest"),
        ({"trainer": {"runAsUser": 0}}, r"/trainer/runAsUser"),
        ({"trainer": {"shmSizeLimit": "lots"}}, r"/trainer/shmSizeLimit"),
        ({"networkPolicy": {"metricsFrom": ["no label"]}}, r"/networkPolicy/metricsFrom/0"),
    ],
)
def test_a_bad_value_is_rejected_by_the_schema_when_rendering(values, message):
    with pytest.raises(helm_python.HelmValuesError, match=message):
        render(values)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_chart_passes_helm_lint(name):
    report = helm_python.lint(CHART, VALUE_SETS[name], strict=True, kube_version="v1.20.2")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_the_packaged_chart_carries_the_crd_and_the_dashboard_and_renders_the_same(tmp_path):
    archive = helm_python.package(CHART, destination=tmp_path)
    packaged = helm_python.Chart.load(archive)
    files = {f["name"] for f in packaged.files}
    crds = {
        "files/crds/prefops.dev_preferencetrainingjobs.yaml",
        "files/crds/prefops.dev_preferencetrainingsweeps.yaml",
    }
    assert {*crds, "dashboards/prefops.json", "README.md"} <= files
    values = {"dashboards": {"enabled": True}}
    from_archive = packaged.render(values, name="prefops", namespace=NAMESPACE)
    from_dir = chart().render(values, name="prefops", namespace=NAMESPACE)
    assert from_archive == from_dir
    assert any(re.search(r"kind: ConfigMap", text) for text in from_archive.values())
    assert load_all(from_archive["prefops/templates/crd.yaml"])[0]["spec"] == crd_file_spec()["spec"]


# -- pod hardening and network policies ------------------------------------------------------------------------


def test_trainer_scratch_volume_limits_reach_the_trainer_pods():
    values = VALUE_SETS["network-policy"]
    trainer = pod(make_job("dpo"), PodPhase.TRAIN, 0, 1, operator_config(values).children)
    volumes = {v["name"]: v["emptyDir"] for v in trainer["spec"]["volumes"] if "emptyDir" in v}
    assert (volumes["dshm"]["sizeLimit"], volumes["cache"]["sizeLimit"]) == ("8Gi", "1Ti")


def test_network_policies_are_off_by_default_and_grant_nothing():
    rendered = render()
    assert "NetworkPolicy" not in rendered.kinds()
    assert not operator_config({}).children.network_policy
    assert "networkpolicies" not in str(rendered.one("ClusterRole")["rules"])


def test_with_network_policies_the_operator_pod_is_scraped_only_from_the_monitoring_namespaces():
    rendered = render(VALUE_SETS["network-policy"])
    policy = rendered.one("NetworkPolicy")["spec"]
    operator_pod = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert matches(policy["podSelector"], operator_pod)
    health, metrics = policy["ingress"]
    assert health == {"ports": [{"protocol": "TCP", "port": 8081}]}  # the kubelet's probes, from the node
    assert metrics["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
                               {"namespaceSelector": {"matchLabels": {"team": "ml-ops"}}}]  # fmt: skip


def test_with_network_policies_each_job_gets_one_from_the_operator_which_may_create_it():
    values = VALUE_SETS["network-policy"]
    children = operator_config(values).children
    assert children.network_policy
    assert children.metrics_from == ("kubernetes.io/metadata.name=monitoring", "team=ml-ops",
                                     f"kubernetes.io/metadata.name={NAMESPACE}")  # fmt: skip
    job = make_job("dpo")
    policy = network_policy(job, children)["spec"]
    assert all(
        matches(policy["podSelector"], pod(job, phase, 0, 1, children)["metadata"]["labels"]) for phase in PodPhase
    )
    granted = rules(render(values).one("ClusterRole"))
    assert {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create", "get"]} in granted


def test_user_roles_are_opt_in_and_grant_what_the_manual_user_roles_grant():
    assert len(render().all("ClusterRole")) == 1  # the operator's own
    rendered = {r["metadata"]["name"]: r for r in render({"rbac": {"userRoles": True}}).all("ClusterRole")}
    docs = yaml.safe_load_all((ROOT / "operator" / "rbac" / "users" / "roles.yaml").read_text())
    for manual in (d for d in docs if d):
        role = rendered[manual["metadata"]["name"]]
        assert rules(role) == rules(manual)
        aggregate = {k: v for k, v in role["metadata"]["labels"].items() if k.startswith("rbac.authorization.k8s.io/")}
        assert aggregate == manual["metadata"]["labels"]


def test_the_notes_warn_that_a_cluster_wide_operator_can_create_pods_in_kube_system_and_give_the_pod_security_label():
    everywhere = render().notes
    assert "lets it create pods in every namespace, kube-system included" in everywhere
    assert "--set 'watchNamespaces={team-a,team-b}'" in everywhere
    assert "kubectl label namespace <job namespace> pod-security.kubernetes.io/enforce=restricted" in everywhere
    namespaced = render(VALUE_SETS["namespaced"]).notes
    assert "kube-system" not in namespaced, "no warning once the operator is namespaced"
    for team in ("chart-team-a", "chart-team-b"):
        assert f"kubectl label namespace {team} pod-security.kubernetes.io/enforce=restricted" in namespaced
    assert "kube-system" not in render({"rbac": {"create": False}}).notes, "the user's own RBAC: nothing to say"


# -- who creates sweeps (sweepCreators) ------------------------------------------------------------------------


def test_checking_sweep_creators_is_off_by_default_with_no_webhook_and_no_access_reviews():
    rendered = render()
    assert "MutatingWebhookConfiguration" not in rendered.kinds() and "Secret" not in rendered.kinds()
    config = operator_config({})
    assert (config.check_sweep_creators, config.webhook_port) == (False, 0)
    assert "subjectaccessreviews" not in str([r["rules"] for r in rendered.all("ClusterRole")])


def test_with_sweep_creators_the_operator_serves_the_webhook_behind_its_service_on_the_port_it_is_given():
    values = VALUE_SETS["sweep-creators"]
    rendered = render(values)
    config = operator_config(values)
    assert config.check_sweep_creators and config.webhook_port == 9444
    hook = rendered.one("MutatingWebhookConfiguration")["webhooks"][0]
    service = next(
        s for s in rendered.all("Service") if s["metadata"]["name"] == hook["clientConfig"]["service"]["name"]
    )
    assert hook["clientConfig"]["service"]["path"] == f"/{WEBHOOK_ID}"  # kopf routes /<handler id> to the handler
    assert hook["clientConfig"]["service"]["namespace"] == NAMESPACE
    (port,) = service["spec"]["ports"]
    assert port["port"] == hook["clientConfig"]["service"]["port"] and port["targetPort"] == "webhook"
    assert {"name": "webhook", "containerPort": 9444, "protocol": "TCP"} in container(rendered)["ports"]
    assert (
        service["spec"]["selector"].items()
        <= rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    assert hook["namespaceSelector"] == {"matchLabels": {"prefops.dev/sweeps": "checked"}}
    assert {"protocol": "TCP", "port": 9444} in [p for rule in rendered.one("NetworkPolicy")["spec"]["ingress"]
                                                  for p in rule["ports"] if "from" not in rule]  # fmt: skip


def test_the_webhook_sees_every_create_and_update_of_a_sweep_and_refuses_them_when_it_cannot_answer():
    hook = render(VALUE_SETS["sweep-creators"]).one("MutatingWebhookConfiguration")["webhooks"][0]
    assert hook["rules"] == [{"apiGroups": ["prefops.dev"], "apiVersions": ["*"],
                              "resources": ["preferencetrainingsweeps"], "operations": ["CREATE", "UPDATE"],
                              "scope": "Namespaced"}]  # fmt: skip
    assert (hook["failurePolicy"], hook["sideEffects"], hook["matchPolicy"]) == ("Fail", "None", "Equivalent")


def test_the_webhook_certificate_is_for_its_service_signed_by_the_ca_the_apiserver_is_given(tmp_path):
    rendered = render(VALUE_SETS["sweep-creators"])
    hook = rendered.one("MutatingWebhookConfiguration")["webhooks"][0]
    secret = rendered.one("Secret")
    volume = next(v for v in rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == secret["metadata"]["name"] and secret["type"] == "kubernetes.io/tls"
    mount = next(m for m in container(rendered)["volumeMounts"] if m["name"] == volume["name"])
    config = operator_config(VALUE_SETS["sweep-creators"])
    assert mount["mountPath"] == config.webhook_cert_dir
    assert config.creator_key_file == f"{mount['mountPath']}/creator.key"
    assert {"key": "creator.key", "path": "creator.key"} in volume["secret"]["items"]
    assert len(base64.b64decode(secret["data"]["creator.key"])) >= 32
    ca, crt = tmp_path / "ca.crt", tmp_path / "tls.crt"
    ca.write_bytes(base64.b64decode(hook["clientConfig"]["caBundle"]))
    crt.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(crt)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    sans = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(crt)], capture_output=True, text=True)
    assert f"DNS:prefops-webhook.{NAMESPACE}.svc" in sans.stdout


def test_with_sweep_creators_the_operator_may_review_access_as_the_manual_manifest_grants():
    rendered = render(VALUE_SETS["sweep-creators"])
    role = next(r for r in rendered.all("ClusterRole") if r["metadata"]["name"].endswith("-sweep-creators"))
    docs = yaml.safe_load_all((ROOT / "operator" / "rbac" / "sweep-creators" / "operator.yaml").read_text())
    manual = next(d for d in docs if d and d["kind"] == "ClusterRole")
    assert rules(role) == rules(manual)
    binding = next(b for b in rendered.all("ClusterRoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"])
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prefops", "namespace": NAMESPACE}]
    mine = {**VALUE_SETS["sweep-creators"], "rbac": {"create": False}, "serviceAccount": {"create": False, "name": "x"}}
    assert "ClusterRole" not in render(mine).kinds()
