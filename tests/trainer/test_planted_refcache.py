"""Files put into a reference cache's folder before its manifest exists (issue 18, item 13), tried against the real S3
server: a shard or tokens file is adopted only when this job wrote it (an earlier attempt of its precompute); one
planted by a bucket writer before the job ran, or left by another job, is computed again and the log names it."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.trainer_jobs import job_doc

from prefops_trainer import inputs as inputs_module
from prefops_trainer.adapters.refcache import RefTable
from prefops_trainer.compute import logprobs
from prefops_trainer.core.cachekey import not_ours, origin
from prefops_trainer.core.spec import Job, parse_job
from prefops_trainer.inputs import Inputs, load_inputs
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases.train.reference import load_reference

#: The job's uid on a cluster: every attempt of the job shares it, and no file written before the job existed has it.
UID = "0b7e55a2-6c1f-4f7e-9d3a-5e2b8c9d1f00"
#: The uid of another job of the same cache key.
THEIRS = "6d1f0c3e-2a4b-4c5d-8e9f-a0b1c2d3e4f5"


def cluster_job(tmp_path: Path, bucket: str, workers: int) -> Job:
    doc = job_doc(tmp_path, storage={"uri": f"s3://{bucket}/work"}, reference={"workers": workers})
    doc["metadata"]["uid"] = UID
    return parse_job(doc)


def clean_table(tmp_path: Path, workers: int) -> tuple[str, RefTable]:
    """The cache key and reference table of a clean run of the same inputs, on storage nobody else writes."""
    inputs = load_inputs(parse_job(job_doc(tmp_path / "clean", "clean", reference={"workers": workers})))
    for shard in range(workers):
        precompute_phase.run(inputs, shard, workers)
    return inputs.ref_cache("train").key, inputs.ref_cache("train").load()


def forged_shard(rows: range) -> pa.Table:
    """A well-formed shard of ``rows`` whose every log-prob is -1."""
    logps = pa.array([-1.0] * len(rows), pa.float32())
    return pa.table({"index": pa.array(rows, pa.int64()), "ref_chosen_logps": logps, "ref_rejected_logps": logps})


def forged_tokens(inputs: Inputs, rows: range) -> pa.Table:
    """Well-formed tokens of ``rows``, with the chosen and rejected completions swapped."""
    table = inputs.tokenized_rows("train", rows).select_columns(["index", "prompt_ids", "chosen_ids", "rejected_ids"])
    swapped = table.with_format("arrow")[:].select(["index", "prompt_ids", "rejected_ids", "chosen_ids"])
    return swapped.rename_columns(["index", "prompt_ids", "chosen_ids", "rejected_ids"])


def plant(server, bucket: str, key: str, name: str, table: pa.Table, recorded: dict | None) -> None:
    """Put ``table`` into cache ``key``'s folder as ``name``, its Parquet metadata recording ``recorded`` as its
    writer (nothing when None)."""
    out = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({b"prefops": json.dumps(recorded)} if recorded else {}), out)
    server.client().put_object(Bucket=bucket, Key=f"work/refcache/{key}/{name}", Body=out.getvalue())


def same(table: RefTable, expected: RefTable) -> bool:
    return np.array_equal(table.chosen, expected.chosen) and np.array_equal(table.rejected, expected.rejected)


def test_a_file_is_this_jobs_only_when_it_records_this_jobs_run_and_this_cache_key():
    ours = origin("k1", UID)
    assert not_ours(json.loads(json.dumps(ours)), ours) is None
    for nothing in (None, "k1", [UID]):
        assert not_ours(nothing, ours) == "it records no writer (written before this job ran, or by an older prefops)"
    assert not_ours({"key": "k1"}, ours) == f"it records no run, where this job has run '{UID}'"
    assert not_ours(origin("k1", THEIRS), ours) == f"it records run '{THEIRS}', where this job has run '{UID}'"
    assert not_ours(origin("k2", UID), ours) == "it records key 'k2', where this job has key 'k1'", (
        "this job's shard of another cache (its eval split's) copied into this one is not adopted"
    )


@pytest.mark.integration
@pytest.mark.parametrize("writer", ["none", "another job"])
def test_a_shard_and_tokens_planted_before_precompute_ran_are_not_adopted_and_the_log_names_each(
    tmp_path, s3, monkeypatch, caplog, writer
):
    server, bucket = s3
    monkeypatch.setenv("PREFOPS_CACHE_DIR", str(tmp_path / "cache"))
    key, expected = clean_table(tmp_path, 2)
    inputs = load_inputs(cluster_job(tmp_path, bucket, 2))
    cache = inputs.ref_cache("train")
    assert cache.key == key
    recorded = origin(key, THEIRS) if writer == "another job" else None
    planted = {
        "shard-00001-of-00002.parquet": forged_shard(range(32, 64)),
        "tokens-00000-of-00002.parquet": forged_tokens(inputs, range(0, 32)),
    }
    for name, table in planted.items():
        plant(server, bucket, key, name, table, recorded)

    caplog.set_level(logging.WARNING, logger="prefops_trainer")
    precompute_phase.run(inputs, 0, 2)
    assert cache.manifest() is None, "shard 0's worker counted the planted shard 1 into a manifest"
    with pytest.raises(RuntimeError, match=r"incomplete \(shards \[1\] not written by this job\): run the precompute"):
        load_reference(inputs)  # nor does the train phase
    precompute_phase.run(inputs, 1, 2)
    why = {"none": "it records no writer", "another job": f"it records run '{THEIRS}', where this job has run '{UID}'"}
    for name in planted:
        assert f"s3://{bucket}/work/refcache/{key}/{name}: not adopted: {why[writer]}" in caplog.text
    assert same(cache.load(), expected), "the planted numbers or tokens reached the reference table"


@pytest.mark.integration
def test_a_restarted_precompute_adopts_the_shard_and_tokens_its_earlier_attempt_wrote_and_only_those(
    tmp_path, s3, monkeypatch, caplog
):
    server, bucket = s3
    monkeypatch.setenv("PREFOPS_CACHE_DIR", str(tmp_path / "cache"))
    key, expected = clean_table(tmp_path, 3)
    monkeypatch.setenv("PREFOPS_ATTEMPT", "0")
    first = load_inputs(cluster_job(tmp_path, bucket, 3))
    precompute_phase.run(first, 0, 3)
    compute, tokenize = logprobs.compute, inputs_module.tokenize_pairs
    with monkeypatch.context() as stopped:
        stopped.setattr(logprobs, "compute", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):  # stopped in shard 1's pass, its rows tokenized and kept
            precompute_phase.run(first, 1, 3)
    plant(server, bucket, key, "shard-00002-of-00003.parquet", forged_shard(range(42, 64)), None)

    monkeypatch.setenv("PREFOPS_ATTEMPT", "1")
    passes: list[int] = []
    tokenized: list[int] = []
    monkeypatch.setattr(logprobs, "compute", lambda m, rows, **k: passes.append(len(rows)) or compute(m, rows, **k))
    monkeypatch.setattr(
        inputs_module, "tokenize_pairs", lambda rows, *a: tokenized.append(len(rows)) or tokenize(rows, *a)
    )
    caplog.set_level(logging.WARNING, logger="prefops_trainer")
    restarted = load_inputs(cluster_job(tmp_path, bucket, 3))  # the job's next attempt: a new pod, a new process
    assert restarted.ws.attempt == 1
    for shard in range(3):
        precompute_phase.run(restarted, shard, 3)
    assert passes == [21, 22], (
        "shard 0 adopted as its earlier attempt wrote it; shard 1 and the planted shard 2 computed"
    )
    assert tokenized == [22], "only the planted shard's rows tokenized: shard 1's kept tokens adopted"
    assert "not adopted" not in caplog.text.replace(f"{key}/shard-00002-of-00003.parquet: not adopted", "")
    assert same(restarted.ref_cache("train").load(), expected), "not bit-identical to a clean run's table"
