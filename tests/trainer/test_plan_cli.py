"""``prefops-trainer plan`` on every shipped job: the table and the JSON, from the spec and the model's config.json alone.

No weights are downloaded, and none could be: the Hub is offline with a cache that holds each model's config.json
and nothing else, and the S3 example's bucket holds only its model's config.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from support.trainer_jobs import TINY, run_cli

from prefops_trainer.core.planner.phases import COMPONENTS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "fixtures" / "model-configs"
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A Hugging Face cache holding only config.json of every model the examples name (their real values)."""
    cache = tmp_path_factory.mktemp("hf-hub")
    for config in CONFIGS.glob("*.json"):
        repo = cache / f"models--{config.stem}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0" * 40)
        (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
        shutil.copy(config, repo / "snapshots" / ("0" * 40) / "config.json")
    return cache


@pytest.fixture
def env(hub_cache, s3_server, tmp_path) -> dict[str, str]:
    """The Hub offline (its cache only) and the demo bucket with the tiny model's config.json, and nothing else."""
    client = s3_server.client()
    if "prefops-demo" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        s3_server.create_bucket("prefops-demo")
    client.upload_file(str(TINY / "model" / "config.json"), "prefops-demo", "tiny/model/config.json")
    return {**s3_server.env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache),
            "PREFOPS_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip


@pytest.mark.parametrize("example", EXAMPLES)
def test_plan_runs_on_every_shipped_example_without_its_weights(example, env):
    """A job's plan, or a sweep's every trial's."""
    path = ROOT / "examples" / example
    result = run_cli("plan", str(path), "--output", "json", "--gpu-memory", "80Gi", cwd=ROOT, env=env)
    assert result.returncode in (0, 4), result.stderr[-2000:]
    manifest = yaml.safe_load(path.read_text())
    docs = json.loads(result.stdout)
    if manifest["kind"] == "PreferenceTrainingSweep":
        assert len(docs["trials"]) > 1
        for doc in docs["trials"].values():
            check_document(doc, manifest["spec"]["template"])
    else:
        check_document(docs, manifest["spec"])
    assert not list((Path(env["PREFOPS_CACHE_DIR"])).rglob("*.safetensors")), "no weights were fetched"
    table = run_cli("plan", str(path), "--gpu-memory", "80Gi", cwd=ROOT, env=env)
    assert "per device" in table.stdout and "verdict:" in table.stdout


def check_document(doc: dict, spec: dict) -> None:
    assert doc["schema"] == "prefops.dev/plan/v1"
    assert isinstance(doc["fits"], bool) or (doc["fits"] is None and spec["resources"].get("gpusPerNode") == 0)
    assert set(doc["phases"]) <= {"precompute", "train", "export"} and "train" in doc["phases"]
    for phase in doc["phases"].values():
        assert set(phase["perDevice"]["components"]) == set(COMPONENTS)
        assert phase["perDevice"]["totalBytes"] == sum(phase["perDevice"]["components"].values())
        assert phase["hostBytes"] > 0 and phase["diskBytes"] > 0


def test_a_job_that_does_not_fit_exits_4_naming_the_changes_that_make_it_fit(env):
    path = ROOT / "examples" / "dpo-lora-s3.yaml"
    result = run_cli("plan", str(path), "--gpu-memory", "9Gi", cwd=ROOT, env=env)
    assert result.returncode == 4, result.stderr[-2000:]
    assert "verdict: does NOT fit" in result.stdout
    assert "changes, each planned again:" in result.stdout and "(fits)" in result.stdout


def test_the_config_can_be_given_and_a_bad_one_is_named(tmp_path, env):
    path = ROOT / "examples" / "orpo-s3.yaml"
    given = CONFIGS / "meta-llama--Llama-3.1-8B-Instruct.json"
    result = run_cli("plan", str(path), "--model-config", str(given), "--output", "json", cwd=ROOT,
                     env={**env, "HF_HUB_CACHE": str(tmp_path / "empty")})  # fmt: skip
    assert result.returncode in (0, 4), result.stderr[-2000:]
    assert json.loads(result.stdout)["model"]["parameters"] == 8_030_261_248
    broken = tmp_path / "config.json"
    broken.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    result = run_cli("plan", str(path), "--model-config", str(broken), cwd=ROOT, env=env)
    assert result.returncode == 2
    assert "config.json: num_attention_heads or n_head: missing (needed to size the model)" in result.stderr


def test_without_the_hub_or_a_config_the_plan_says_how_to_give_one(tmp_path, env):
    result = run_cli("plan", str(ROOT / "examples" / "simpo-s3.yaml"), cwd=ROOT,
                     env={**env, "HF_HUB_CACHE": str(tmp_path / "empty")})  # fmt: skip
    assert result.returncode == 2
    assert "spec.model.source: cannot fetch config.json of hf://Qwen/Qwen2.5-0.5B-Instruct" in result.stderr
    assert "--model-config" in result.stderr
