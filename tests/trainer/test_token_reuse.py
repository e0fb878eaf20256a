"""A job tokenizes its data once: the precompute phase's tokens, listed in the cache's manifest, are what a DPO or KTO
trainer trains on. The train phase then tokenizes only the rows its spot check draws, trains on exactly what TRL's own
tokenization gives, and refuses tokens that are not the manifest's or not this tokenizer's."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.trainer_jobs import job_doc

from prefops_trainer.adapters import storage
from prefops_trainer.core.cachekey import parse_manifest
from prefops_trainer.core.errors import CacheError, IntegrityError
from prefops_trainer.core.spec import parse_job
from prefops_trainer.core.workspace import TRAINED_MARKER
from prefops_trainer.inputs import load_inputs
from prefops_trainer.phases import precompute as precompute_phase
from prefops_trainer.phases import train as train_phase

ROWS = 48
TRAIN = {"maxSteps": 3, "perDeviceBatchSize": 4, "seed": 3, "checkpointEverySteps": 100}


def job_inputs(tmp: Path, name: str, workers: int = 2):
    doc = job_doc(tmp, name, dataset={"maxSamples": ROWS}, training=TRAIN, reference={"workers": workers})
    return load_inputs(parse_job(doc))


def precomputed(tmp: Path, name: str, workers: int = 2):
    """A job whose reference cache is complete, every shard computed by its own precompute run."""
    inputs = job_inputs(tmp, name, workers)
    for shard in range(workers):
        precompute_phase.run(inputs, shard, workers)
    return inputs


def tokenized_sizes(monkeypatch, trainer: str = "DPOTrainer") -> list[int]:
    """The size of every split the TRL trainer's own tokenization is given from now on (the spot check's rows
    included); a split that arrives tokenized is not counted."""
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.kto_trainer import KTOTrainer

    from prefops_trainer.adapters import trl_bridge

    cls = {"DPOTrainer": DPOTrainer, "KTOTrainer": KTOTrainer}[trainer]
    sizes: list[int] = []
    original = cls._prepare_dataset

    def watched(self, dataset, *args, **kwargs):
        if not trl_bridge.pretokenized(dataset):
            sizes.append(len(dataset))
        return original(self, dataset, *args, **kwargs)

    monkeypatch.setattr(cls, "_prepare_dataset", watched)
    return sizes


def manifest_path(inputs) -> Path:
    return Path(inputs.ref_cache("train").manifest_uri.path)


def losses(report) -> list[float]:
    return [h["loss"] for h in report["logHistory"]]


def test_training_reads_the_tokens_precompute_kept_and_trains_as_when_trl_tokenizes(tmp_path, monkeypatch):
    inputs = precomputed(tmp_path, "kept")
    doc = json.loads(manifest_path(inputs).read_text())
    assert [t["name"] for t in doc["tokens"]] == ["tokens-00000-of-00002.parquet", "tokens-00001-of-00002.parquet"]
    assert [t["rows"] for t in doc["tokens"]] == [24, 24]

    sizes = tokenized_sizes(monkeypatch)
    reused = train_phase.run(inputs)
    assert reused["tokenizedBy"] == "precompute"
    assert sizes == [inputs.spec.reference.verify_samples], "only the spot check's rows were tokenized"

    del doc["tokens"]  # a cache written before the manifest listed tokens: training tokenizes the split, as TRL does
    manifest_path(inputs).write_text(json.dumps(doc))
    sizes.clear()
    again = train_phase.run(job_inputs(tmp_path, "older"))  # the same job again (another name: its own checkpoints)
    assert again["tokenizedBy"] == "training"
    assert ROWS in sizes, "TRL tokenized the whole split"
    assert losses(reused) == losses(again) and len(set(losses(reused))) == 3, "the same steps, bit for bit"


KTO = {"name": "kto", "beta": 0.5, "undesirableWeight": 1.5}


def kto_inputs(tmp: Path, name: str, batch: int = 4):
    """A KTO job on the paired tiny data (each pair two unpaired rows: 48), 2 precompute shards."""
    training = TRAIN | {"perDeviceBatchSize": batch}
    doc = job_doc(tmp, name, algorithm=KTO, dataset={"maxSamples": ROWS // 2}, training=training,
                  reference={"workers": 2})  # fmt: skip
    return load_inputs(parse_job(doc))


def test_kto_trains_on_the_tokens_precompute_kept_its_kl_completions_included(tmp_path, monkeypatch):
    inputs = kto_inputs(tmp_path, "kto")
    sizes = tokenized_sizes(monkeypatch, "KTOTrainer")
    for shard in range(2):
        precompute_phase.run(inputs, shard, 2)
    assert sizes == [24, 24], "each shard tokenized its own rows (whole KL batches), not the split"
    assert len(json.loads(manifest_path(inputs).read_text())["tokens"]) == 2

    sizes.clear()
    reused = train_phase.run(inputs)
    assert reused["tokenizedBy"] == "precompute"
    checked = inputs.spec.reference.verify_samples
    assert len(sizes) == 1 and checked <= sizes[0] < ROWS, "only the spot check's rows' batches were tokenized"

    doc = json.loads(manifest_path(inputs).read_text())
    del doc["tokens"]
    manifest_path(inputs).write_text(json.dumps(doc))
    sizes.clear()
    again = train_phase.run(kto_inputs(tmp_path, "kto-older"))
    assert again["tokenizedBy"] == "training" and ROWS in sizes
    assert losses(reused) == losses(again) and len(set(losses(reused))) == 3, "the same steps, bit for bit"
    assert [h["kl"] for h in reused["logHistory"]] == [h["kl"] for h in again["logHistory"]]


@pytest.mark.parametrize("batch", [3, 4, 5])
def test_kto_rows_tokenized_alone_equal_the_split_tokenized_whole(tmp_path, batch):
    """A shard, or the spot check, tokenizes only the KL batches its rows are in; each row's tokens, KL completion
    included, are those of the whole split tokenized at once (the last batch short when the batch does not divide
    the split)."""
    whole = kto_inputs(tmp_path, f"whole-{batch}", batch).tokenized("train")
    alone = kto_inputs(tmp_path, f"alone-{batch}", batch)
    for positions in ([0], [5, 6, 7], [47], [1, 20, 46], list(range(12, 36))):
        rows = alone.tokenized_rows("train", positions)
        assert rows["index"] == whole.select(positions)["index"]
        for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert rows[column] == whole.select(positions)[column], (positions, column)
    assert "train" not in alone._tokenized, "the split was never tokenized whole"


def rewrite_tokens(path: Path, change) -> None:
    """The tokens file at ``path`` with ``change`` applied to its table; its origin (this job's) kept."""
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def swapped(table: pa.Table) -> pa.Table:
    """Every pair's chosen and rejected tokens swapped: well-formed tokens of other rows."""
    chosen, rejected = table.column("chosen_ids"), table.column("rejected_ids")
    table = table.set_column(table.schema.get_field_index("chosen_ids"), "chosen_ids", rejected)
    return table.set_column(table.schema.get_field_index("rejected_ids"), "rejected_ids", chosen)


def test_a_tokens_file_altered_after_the_manifest_is_refused_naming_it_and_nothing_trains(tmp_path):
    inputs = precomputed(tmp_path, "altered")
    cache = inputs.ref_cache("train")
    rewrite_tokens(Path(cache.tokens_uri(1, 2).path), swapped)
    with pytest.raises(IntegrityError, match=r"tokens-00001-of-00002\.parquet is not the file the manifest records"):
        train_phase.run(inputs)
    assert not Path(inputs.ws.trained.path, TRAINED_MARKER).exists()


def test_a_consistent_cache_of_other_tokens_is_caught_by_the_spot_check_naming_the_row(tmp_path):
    inputs = precomputed(tmp_path, "forged", workers=1)
    cache = inputs.ref_cache("train")
    rewrite_tokens(Path(cache.tokens_uri(0, 1).path), swapped)
    storage.remove(cache.manifest_uri)  # rewritten with the forged file's sha256, as whoever can write the cache could
    cache.finalize(1, ROWS, {})
    assert parse_manifest(cache.manifest(), cache.key, "m").tokens, "the forged tokens are listed"
    with pytest.raises(CacheError, match=r"row \d+ chosen_ids differs from the row tokenized now"):
        train_phase.run(inputs)
    assert not Path(inputs.ws.trained.path, TRAINED_MARKER).exists()


def test_a_precompute_that_did_not_keep_every_shards_tokens_lists_none_and_training_tokenizes(tmp_path):
    inputs = job_inputs(tmp_path, "partial")
    precompute_phase.run(inputs, 0, 2)
    storage.remove(inputs.ref_cache("train").tokens_uri(0, 2))  # e.g. removed by a cleanup while shard 1 ran
    precompute_phase.run(inputs, 1, 2)
    assert "tokens" not in json.loads(manifest_path(inputs).read_text())
    assert train_phase.run(inputs)["tokenizedBy"] == "training"


@pytest.mark.parametrize(
    ("tokens", "error"),
    [
        ({"name": "tokens-00000-of-00001.parquet", "rows": 47, "sha256": "0" * 64}, r"tokens: the files hold 47 rows"),
        ({"name": "../x/tokens-00000-of-00001.parquet", "rows": 48, "sha256": "0" * 64}, r"tokens\[0\]: names"),
        ({"name": "tokens-00000-of-00001.parquet", "rows": 48, "sha256": "nope"}, r"tokens\[0\]: .*no valid sha256"),
    ],
    ids=["rows", "path", "sha256"],
)
def test_a_manifest_whose_tokens_entries_are_malformed_is_refused(tokens, error):
    shard = {"name": "shard-00000-of-00001.parquet", "rows": 48, "sha256": "1" * 64}
    doc = {"key": "k", "format": 2, "rows": 48, "shards": [shard], "tokens": [tokens]}
    with pytest.raises(IntegrityError, match=error):
        parse_manifest(doc, "k", "manifest.json")
