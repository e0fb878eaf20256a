"""Bad input: one clear paragraph naming the field, file or row; exit code 2; nothing left looking complete."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from support.trainer_jobs import TINY, error_of, job_doc, run_cli

from prefops_trainer.core.hardware import Machine, problems
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def assert_nothing_complete(tmp: Path) -> None:
    assert not list(tmp.rglob("prefops.json")), "no exported model may look complete"
    assert not list(tmp.rglob("manifest.json")), "no reference cache may look complete"


GOOD = {"prompt": "what is one plus one ?", "chosen": " two .", "rejected": " three ."}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [GOOD, {"prompt": "p", "chosen": " a ."}, GOOD],
            r"bad\.jsonl: row 1: column 'rejected' is missing, empty or malformed",
        ),
        (
            [GOOD, GOOD, {**GOOD, "chosen": ""}],
            r"bad\.jsonl: row 2: column 'chosen' is missing, empty or malformed",
        ),
        (
            [{"question": "q", "answer": "a"}],
            r"bad\.jsonl: row 0: missing column 'chosen', 'rejected' \(the rows have answer, question\)",
        ),
        (
            [
                GOOD,
                {
                    "prompt": [{"role": "user", "content": "hi"}],
                    "chosen": " a",
                    "rejected": " b",
                },
            ],
            r"bad\.jsonl: row 1: mixes plain strings and chat messages",
        ),
        (
            [
                GOOD,
                {
                    "prompt": "what " * 80 + "?",
                    "chosen": " two .",
                    "rejected": " one .",
                },
            ],
            r"bad\.jsonl: row 1: the prompt alone is 81 tokens, which fills spec\.dataset\.maxLength \(64\)",
        ),
    ],
    ids=[
        "missing-column-in-row",
        "empty-value",
        "no-such-columns",
        "mixed-forms",
        "prompt-exceeds-maxLength",
    ],
)
def test_bad_rows_are_named(tmp_path, tmp_job, rows, message):
    data = write_rows(tmp_path / "bad.jsonl", rows)
    result = run_cli("run", tmp_job(dataset={"source": str(data)}))
    assert __import__("re").search(message, error_of(result)), error_of(result)
    assert_nothing_complete(tmp_path)


def test_empty_dataset_is_rejected(tmp_path, tmp_job):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    error = error_of(run_cli("run", tmp_job(dataset={"source": str(data)})))
    assert "empty.jsonl" in error and ("empty" in error.split("empty.jsonl", 1)[1])
    assert_nothing_complete(tmp_path)


def test_missing_model_path_names_the_field(tmp_path, tmp_job):
    error = error_of(run_cli("run", tmp_job(model={"source": str(tmp_path / "no-model")})))
    assert f"spec.model.source: model path '{tmp_path / 'no-model'}' does not exist" in error
    assert_nothing_complete(tmp_path)


def test_missing_dataset_path_names_the_field(tmp_path, tmp_job):
    error = error_of(run_cli("run", tmp_job(dataset={"source": "nowhere/prefs.jsonl"})))
    assert "spec.dataset.source: dataset path 'nowhere/prefs.jsonl' does not exist" in error


def test_lora_target_matching_nothing_names_the_field(tmp_path, tmp_job):
    job = tmp_job(model={"lora": {"targetModules": ["q_proj", "attn_c"]}})
    error = error_of(run_cli("run", job))
    assert "spec.model.lora.targetModules: 'attn_c' matches no module of the model" in error
    assert "q_proj" in error.split("include", 1)[1], "the message lists the model's real module names"
    assert_nothing_complete(tmp_path)


def test_reference_free_algorithm_cannot_precompute(tmp_path, tmp_job):
    error = error_of(run_cli("precompute", tmp_job(algorithm={"name": "simpo"})))
    assert "spec.reference.precompute: algorithm 'simpo' has nothing to precompute" in error
    error = error_of(
        run_cli(
            "run",
            tmp_job(name="u", algorithm={"name": "orpo"}, reference={"precompute": True}),
        )
    )
    assert "spec.reference.precompute: algorithm 'orpo' is reference-free" in error


def test_invalid_spec_fails_before_loading_anything(tmp_path, tmp_job):
    job = tmp_job(
        algorithm={"name": "dpo", "lossType": ["sigmoid", "shiny"]},
        training={"deepspeed": {"stage": 1}},
    )
    error = error_of(run_cli("run", job))
    assert "'shiny' not valid for algorithm 'dpo'; valid: sigmoid, hinge, ipo" in error
    assert "spec.training.deepspeed.stage: must be 2 or 3, got 1" in error
    assert not (tmp_path / "work").exists()


def test_hub_source_gives_a_clear_error_offline(tmp_path, tmp_job):
    error = error_of(
        run_cli(
            "run",
            tmp_job(model={"source": "hf://acme/not-reachable"}),
            env={"HF_HUB_OFFLINE": "1"},
        )
    )
    assert "spec.model.source: cannot fetch hf://acme/not-reachable from the Hugging Face Hub" in error


def test_termination_message_carries_the_reason(tmp_path, tmp_job):
    term = tmp_path / "termination-log"
    term.write_text("")
    run_cli(
        "run",
        tmp_job(model={"source": str(tmp_path / "gone")}),
        env={"PREFOPS_TERMINATION_LOG": str(term)},
    )
    assert "spec.model.source" in term.read_text()


def test_shard_out_of_range_is_rejected(tmp_path, tmp_job):
    error = error_of(run_cli("precompute", tmp_job(), "--shard", "3", "--num-shards", "2"))
    assert "--shard: must be in [0, 2), got 3" in error


def test_tiny_data_files_exist():
    assert (TINY / "prefs.jsonl").exists() and (TINY / "model" / "config.json").exists()


def test_a_finished_precompute_reports_the_cache_hit_in_its_termination_message(tmp_path, tmp_job):
    term = tmp_path / "termination-log"
    for expected in (False, True):
        term.write_text("")
        assert run_cli("precompute", tmp_job(), env={"PREFOPS_TERMINATION_LOG": str(term)}).returncode == 0
        assert json.loads(term.read_text()) == {"cacheHit": expected}


def test_credentials_in_a_uri_reach_neither_the_log_nor_the_termination_message(tmp_path, tmp_job):
    term = tmp_path / "termination-log"
    term.write_text("")
    key, secret = "AKIAEXAMPLEKEY", "wJalrXUtnFEMIEXAMPLESECRET"
    job = tmp_job(storage={"uri": f"s3://{key}:{secret}@bucket/work"})
    result = run_cli("run", job, env={"PREFOPS_TERMINATION_LOG": str(term)})
    assert "spec.storage.uri: credentials must not be written into a URI" in error_of(result)
    for shown in (result.stdout, result.stderr, term.read_text()):
        assert key not in shown and secret not in shown
    assert "spec.storage.uri" in term.read_text()


def test_an_eval_split_of_a_single_file_is_refused_instead_of_evaluating_on_the_training_rows(tmp_path, tmp_job):
    job = tmp_job(dataset={"source": str(TINY / "prefs.jsonl"), "evalSplit": "test"})
    error = error_of(run_cli("run", job))
    assert "prefs.jsonl: a single file holds one split, so spec.dataset.evalSplit 'test' cannot be read" in error
    assert "train.jsonl and test.jsonl" in error
    assert_nothing_complete(tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available(),
    reason="this machine has flash-attn and a GPU: nothing to refuse",
)
def test_flash_attention_2_where_it_cannot_run_exits_2_naming_the_field(tmp_path, tmp_job):
    error = error_of(run_cli("run", tmp_job(model={"attnImplementation": "flash_attention_2"})))
    assert "spec.model.attnImplementation: flash_attention_2 needs the flash-attn package and a CUDA GPU" in error
    assert "Use sdpa, or auto" in error
    assert_nothing_complete(tmp_path)


def test_max_length_beyond_the_models_context_exits_2_naming_the_field(tmp_path, tmp_job):
    error = error_of(run_cli("run", tmp_job(dataset={"maxLength": 512})))
    assert "spec.dataset.maxLength: 512 is more than the model's context of 256 tokens" in error
    assert f"(max_position_embeddings in {TINY / 'model'}/config.json)" in error
    assert "Set maxLength to at most 256" in error
    assert_nothing_complete(tmp_path)


def test_bfloat16_is_refused_only_on_a_gpu_without_it():
    def spec(**over):
        return parse_job(job_doc(Path("/tmp"), **over)).spec

    bf16 = spec(model={"dtype": "bfloat16"})
    old_gpu, new_gpu, cpu = Machine(True, False, False), Machine(True, True, False), Machine(False, False, False)
    assert problems(bf16, old_gpu, 256, "config.json") == [
        "spec.model.dtype: bfloat16 asked, but this GPU cannot compute in bfloat16 (it predates Ampere). Use "
        "float16 or float32, or auto (bfloat16 where the GPU supports it, else float32), or schedule the job on "
        "newer GPUs"
    ]
    assert problems(bf16, new_gpu, 256, "config.json") == problems(bf16, cpu, 256, "config.json") == []
    assert problems(spec(model={"dtype": "auto"}), old_gpu, 256, "config.json") == []
    online = spec(algorithm={"name": "online-dpo"}, rewardModel={"source": str(TINY / "reward-model"),
                  "dtype": "bfloat16"})  # fmt: skip
    assert [p.split(":")[0] for p in problems(online, old_gpu, 256, "c")] == ["spec.rewardModel.dtype"]


def test_bfloat16_on_a_cpu_is_accepted(tmp_path):
    inputs = load_inputs(parse_job(job_doc(tmp_path, model={"dtype": "bfloat16"})))
    assert inputs.dtype == "bfloat16" and inputs.load_model().dtype == torch.bfloat16


def test_a_chat_template_that_loops_is_stopped_and_named_with_exit_2(tmp_path):
    import shutil

    model = tmp_path / "looping"
    shutil.copytree(TINY / "model", model)
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    (model / "chat_template.jinja").write_text(loop + (TINY / "model" / "chat_template.jinja").read_text())
    doc = job_doc(tmp_path, model={"source": str(model)}, dataset={"source": str(TINY / "prefs-chat.jsonl")})
    (tmp_path / "job.yaml").write_text(json.dumps(doc))
    error = error_of(run_cli("precompute", tmp_path / "job.yaml", timeout=300))
    assert f"{model / 'chat_template.jinja'}: the tokenizer's chat template took more than 10 s to render" in error
    assert_nothing_complete(tmp_path)
