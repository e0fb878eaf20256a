"""Docs that match the code: the generated spec reference is current, the README opens with the two commands,
and every metric the README lists is one the code exports."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_spec_reference_is_generated_from_the_current_crd():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_spec_reference.py"), "--check"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_prefix_sharing_family_table_is_generated_from_the_registry():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_prefix_sharing_table.py"), "--check"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_algorithm_tables_of_the_readme_and_the_contract_are_generated_from_the_registry():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_algorithm_tables.py"), "--check"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_make_generate_runs_every_generator_and_lint_checks_them_all():
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^GENERATORS := ((?:.*\\\n)*.*)$", makefile, re.M)[1].replace("\\\n", " ").split()
    assert sorted(listed) == sorted(p.stem for p in (ROOT / "scripts").glob("gen_*.py"))
    assert listed.index("gen_sweep_crd") < listed.index("gen_chart_files")  # the chart copies the CRD it writes
    assert listed.index("gen_sweep_crd") < listed.index("gen_spec_reference")  # which documents it
    assert re.search(r"^lint: .*\bgenerate-check\b", makefile, re.M)
    phony = set(re.search(r"^\.PHONY: (.*)$", makefile, re.M)[1].split())
    assert phony <= set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.M)), "a phony target without a rule"


def test_no_test_edits_sys_path_the_helpers_are_the_support_package():
    edits = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")
             if re.search(r"sys\.path\.(insert|append)", p.read_text())]  # fmt: skip
    assert edits == []


def test_readme_opens_with_the_demo_and_test_commands():
    head = (ROOT / "README.md").read_text().splitlines()[:8]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_every_trainer_metric_in_the_readme_is_exported():
    from prometheus_client import generate_latest

    from prefops_trainer.adapters.metrics import TrainerMetrics

    m = TrainerMetrics("j", "n")
    m.set_phase("train")
    for name in m.gauges:
        m.set(name, 1.0)
    m.record_memory()
    m.record_rank_throughput(1.0)
    exported = set(re.findall(r"^(prefops_trainer_[a-z_]+)", generate_latest(m.registry).decode(), re.M))
    listed = set(re.findall(r"`(prefops_trainer_[a-z_]+)`", (ROOT / "README.md").read_text()))
    assert listed, "the README lists the trainer's metrics"
    assert listed <= exported, f"README names metrics the trainer does not export: {sorted(listed - exported)}"
    assert exported - {"prefops_trainer_phase"} <= listed | {"prefops_trainer_phase"}, (
        f"exported but undocumented: {sorted(exported - listed)}"
    )


def test_the_readme_lists_every_example_manifest():
    listed = set(re.findall(r"`examples/([\w.-]+\.yaml)`", (ROOT / "README.md").read_text()))
    assert listed == {p.name for p in (ROOT / "examples").glob("*.yaml")}


def test_every_make_target_the_readme_names_exists():
    named = set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", (ROOT / "README.md").read_text()))
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert {"images", "cluster", "cluster-down"} <= named
    assert named <= targets, f"the README names make targets the Makefile lacks: {sorted(named - targets)}"


def test_every_make_target_and_cluster_command_the_development_docs_name_exists():
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "development.md").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", text)) <= targets
    usage = subprocess.run([sys.executable, str(ROOT / "scripts" / "cluster" / "cluster.py"), "--help"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    commands = set(re.search(r"\{([a-z,-]+)\}", usage)[1].split(","))
    named = set(re.findall(r"scripts/cluster/cluster\.sh ([a-z-]+)", text))
    assert {"kill-node", "restore-node"} <= named <= commands, f"unknown: {sorted(named - commands)}"
    for flag in set(re.findall(r"kill-node \S+ (--[a-z-]+)", text)):
        assert flag in subprocess.run([sys.executable, str(ROOT / "scripts" / "cluster" / "cluster.py"), "kill-node",
                                       "--help"], capture_output=True, text=True, check=True).stdout  # fmt: skip


def test_the_readme_lists_the_phase_metrics_states_the_trainer_reports():
    from prefops_trainer.adapters.metrics import PHASES

    line = next(x for x in (ROOT / "README.md").read_text().splitlines() if "`prefops_trainer_phase`" in x)
    states = re.search(r"an enum: ([a-z, ]+)\)", line)[1].split(", ")
    assert tuple(states) == PHASES


def test_the_spec_reference_shows_exclusive_bounds_as_strict_inequalities():
    import yaml

    crd = yaml.safe_load((ROOT / "crds" / "prefops.dev_preferencetrainingjobs.yaml").read_text())
    reference = (ROOT / "docs" / "spec-reference.md").read_text()

    def walk(schema, path):
        for name, prop in schema.get("properties", {}).items():
            yield f"{path}.{name}", prop
            yield from walk(prop, f"{path}.{name}")

    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    exclusive = [
        (p, prop) for p, prop in walk(spec, "spec") if prop.get("exclusiveMinimum") or prop.get("exclusiveMaximum")
    ]
    assert len(exclusive) >= 5
    for path, prop in exclusive:
        row = next(x for x in reference.splitlines() if x.startswith(f"| `{path}` |"))
        for key, strict, loose in (("Minimum", ">", "≥"), ("Maximum", "<", "≤")):
            if prop.get(f"exclusive{key}"):
                bound = prop[key.lower()]
                assert f"{strict} {bound}" in row and f"{loose} {bound}" not in row, row


def test_the_contract_storage_layout_is_the_one_the_trainer_builds():
    from prefops_trainer.adapters.checkpoints import MARKER
    from prefops_trainer.core.cachekey import shard_name
    from prefops_trainer.core.spec import parse_job
    from prefops_trainer.core.workspace import Workspace
    from prefops_trainer.phases.export import MANIFEST

    job = parse_job({"apiVersion": "prefops.dev/v1alpha1", "kind": "PreferenceTrainingJob",
                     "metadata": {"name": "qwen", "namespace": "team", "uid": "3f2a"},
                     "spec": {"model": {"source": "hf://o/m"}, "dataset": {"source": "s3://d/p"},
                              "algorithm": {"name": "dpo"}, "output": {"uri": "s3://o/model"},
                              "storage": {"uri": "s3://w/work"}}})  # fmt: skip
    ws, key = Workspace.for_job(job, Path("/cache"), attempt=3), "0" * 32
    built = {
        str(ws.refcache(key).join("manifest.json")),
        str(ws.refcache(key).join(shard_name(0, 4))),
        str(ws.checkpoints.join("checkpoint-10", MARKER)),
        str(ws.trained_marker),
        str(ws.report("train")),
        str(ws.report("export")),
        str(job.spec.output.uri.join(MANIFEST)),
    }
    values = {"<storage.uri>": "s3://w/work", "<output.uri>": "s3://o/model", "<namespace>": "team", "<name>": "qwen",
              "<run>": "3f2a", "<attempt>": "3", "<key>": key, "<step>": "10", "<phase>": "export"}  # fmt: skip
    section = (ROOT / "docs" / "contract.md").read_text().split("## 6.")[1]
    documented = set()
    for line in section.split("```")[1].strip().splitlines():
        path = line.split()[0]
        for placeholder, value in values.items():
            path = path.replace(placeholder, value)
        documented.add(path)
    assert documented == built


def test_both_distributions_require_the_python_that_mypy_checks():
    import tomllib

    for dist in ("trainer", "operator"):
        project = tomllib.loads((ROOT / dist / "pyproject.toml").read_text())
        assert project["project"]["requires-python"] == ">=3.11", dist
        assert project["tool"]["mypy"]["python_version"] == "3.11", dist


def test_the_operator_image_comment_claims_the_kubernetes_client_only_if_the_operator_uses_it():
    import tomllib

    comment = " ".join(
        x for x in (ROOT / "images" / "operator" / "Dockerfile").read_text().splitlines()[:4] if x[:1] == "#"
    )
    depends = any(re.match(r"kubernetes\b", d) for d in
                  tomllib.loads((ROOT / "operator" / "pyproject.toml").read_text())["project"]["dependencies"])  # fmt: skip
    assert ("the kubernetes client" in comment.replace("no kubernetes client", "")) == depends
    assert depends or "no kubernetes client" in comment


def test_the_trainer_guide_lists_every_trainer_module():
    source = ROOT / "trainer" / "src" / "prefops_trainer"
    modules = {
        p.relative_to(source).as_posix() for p in source.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
    }
    text = (ROOT / "docs" / "trainer.md").read_text()
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.M))
    train = re.search(r"^\| `phases/train/` \| (.+) \|$", text, re.M)[1]
    listed |= {f"phases/train/{name}.py" for name in re.findall(r"`(\w+)` \(", train)}
    assert listed == modules


def _planner_keys(doc: object, prefix: str = "") -> set[str]:
    """The document's keys as docs/planner.md names them: phases by ``<phase>``, list items by ``[]``, components
    and a suggestion's fields as one key each."""
    if isinstance(doc, list):
        return set().union(*(_planner_keys(item, f"{prefix}[]") for item in doc)) if doc else {prefix}
    if not isinstance(doc, dict) or prefix.endswith(("components", "fields")):
        return {prefix}
    keys: set[str] = set()
    for key, value in doc.items():
        name = "<phase>" if prefix == "phases" else key
        path = f"{prefix}.{name}" if prefix else name
        keys |= {path} if prefix == "phases" else set()
        keys |= _planner_keys(value, path)
    return keys


def test_the_planner_guide_lists_every_key_of_the_plan_document_and_every_component():
    import json

    import yaml

    from prefops_trainer.core import planner
    from prefops_trainer.core.planner.phases import COMPONENTS
    from prefops_trainer.core.planner.render import to_document

    config = json.loads((ROOT / "tests" / "fixtures" / "model-configs" / "Qwen--Qwen2.5-7B-Instruct.json").read_text())
    spec = yaml.safe_load((ROOT / "examples" / "dpo-lora-s3.yaml").read_text())["spec"]
    doc = to_document(planner.plan(spec, config, gpu_memory=9 * 2**30))  # does not fit: suggestions too
    assert doc["suggestions"] and doc["notes"] is not None
    text = (ROOT / "docs" / "planner.md").read_text()
    listed = set(re.findall(r"^\| `([\w.<>\[\]]+)` \|", text, re.M))
    assert listed == _planner_keys(doc) - {"suggestions"}
    components = re.search(r"^Components: (.+?)\.\n\n", text, re.M | re.S)[1]
    assert re.findall(r"`(\w+)`", components) == list(COMPONENTS)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_link_between_the_readme_and_the_docs_reaches_its_file_and_heading():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([\w./-]*?\.md|)(?:#([\w-]+))?\)", page.read_text()):
            linked = (page.parent / target) if target else page
            if not linked.is_file() or (anchor and anchor not in _anchors(linked.read_text())):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken, "links to no file or heading:\n" + "\n".join(broken)
