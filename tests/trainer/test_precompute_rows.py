"""The reference table at scale (issue 21 item 3): columnar from the shards to training, and a restarted precompute
that neither tokenizes nor computes again what an earlier run of it finished."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.trainer_jobs import job_doc

from prefops_trainer import inputs as inputs_module
from prefops_trainer.adapters import storage, trl_bridge
from prefops_trainer.compute import logprobs
from prefops_trainer.core.errors import CacheError
from prefops_trainer.core.spec import parse_job
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases.train.reference import load_reference


def written(cache, num_shards: int) -> dict[int, tuple[float, float]]:
    """Row index -> (chosen, rejected) exactly as the precompute shards hold them on storage."""
    out = {}
    for shard in range(num_shards):
        table = pq.read_table(
            io.BytesIO(storage.read_bytes(cache.root.join(f"shard-{shard:05d}-of-{num_shards:05d}.parquet")))
        )
        for i, c, r in zip(
            *(table.column(n).to_pylist() for n in ("index", "ref_chosen_logps", "ref_rejected_logps")), strict=True
        ):
            out[i] = (c, r)
    return out


@pytest.mark.parametrize("num_shards", [1, 2])
def test_the_table_training_reads_is_the_one_precompute_wrote_row_by_row(tmp_path, num_shards):
    inputs = load_inputs(parse_job(job_doc(tmp_path, reference={"workers": num_shards})))
    for shard in range(num_shards):
        precompute_phase.run(inputs, shard, num_shards)
    on_storage = written(inputs.ref_cache("train"), num_shards)
    table = load_reference(inputs)["train"]
    assert isinstance(table.chosen, np.ndarray) and table.chosen.nbytes + table.rejected.nbytes == 8 * len(table), (
        "columnar: eight bytes a row, not a dict of Python floats"
    )
    assert len(on_storage) == len(table) == 64
    assert all(table[i] == on_storage[i] for i in range(64)), "exactly the stored float32 numbers"
    rows = inputs.splits["train"].rows.shuffle(seed=3)  # training joins on the index column, in its own order
    joined = trl_bridge.join_reference(rows, table, ("ref_chosen_logps", "ref_rejected_logps"))
    for i, c, r in zip(joined["index"], joined["ref_chosen_logps"], joined["ref_rejected_logps"], strict=True):
        assert (c, r) == on_storage[i]


def test_a_restarted_precompute_reuses_the_finished_shard_and_the_tokenized_rows_and_gives_the_same_table(
    tmp_path, monkeypatch
):
    whole = load_inputs(parse_job(job_doc(tmp_path / "whole", reference={"workers": 2})))
    for shard in (0, 1):
        precompute_phase.run(whole, shard, 2)
    expected = whole.ref_cache("train").load()

    job = parse_job(job_doc(tmp_path / "restarted", reference={"workers": 2}))
    first = load_inputs(job)
    precompute_phase.run(first, 0, 2)
    original = logprobs.compute
    monkeypatch.setattr(logprobs, "compute", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed in shard 1's pass, its rows tokenized
        precompute_phase.run(first, 1, 2)

    passes = []
    monkeypatch.setattr(
        logprobs, "compute", lambda model, rows, **k: passes.append(len(rows)) or original(model, rows, **k)
    )
    tokenize = lambda *a, **k: pytest.fail("the restart tokenized again")  # noqa: E731
    monkeypatch.setattr(inputs_module, "tokenize_pairs", tokenize)
    restarted = load_inputs(job)  # a new process: nothing carried over in memory
    for shard in (0, 1):
        precompute_phase.run(restarted, shard, 2)
    assert passes == [32], "only shard 1's rows were computed again"
    table = restarted.ref_cache("train").load()
    assert np.array_equal(table.chosen, expected.chosen) and np.array_equal(table.rejected, expected.rejected)


def test_tokens_kept_for_other_rows_are_refused_naming_the_file(tmp_path):
    inputs = load_inputs(parse_job(job_doc(tmp_path, reference={"workers": 2})))
    precompute_phase.run(inputs, 0, 2)
    cache = inputs.ref_cache("train")
    storage.write_bytes(cache.tokens_uri(1, 2), storage.read_bytes(cache.tokens_uri(0, 2)))
    with pytest.raises(CacheError, match=r"tokens-00001-of-00002\.parquet: does not hold the tokens of rows 32\.\.63"):
        precompute_phase.run(inputs, 1, 2)
