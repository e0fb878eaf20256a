"""Datasets: every accepted source form loads to the same rows; conversational rows are detected."""

import json

import pytest
from support.trainer_jobs import TINY

from prefops_trainer.adapters.data import fingerprint, load_split
from prefops_trainer.core.errors import DataError
from prefops_trainer.core.spec import DatasetSpec

ROWS = [json.loads(line) for line in (TINY / "prefs.jsonl").read_text().splitlines()[:20]]


def spec(source, **kw) -> DatasetSpec:
    return DatasetSpec(source=str(source), **kw)


def test_jsonl_json_parquet_and_saved_datasets_load_the_same_rows(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(str(tmp_path / "saved-dict"))
    hub_layout = tmp_path / "hub-layout" / "data"
    hub_layout.mkdir(parents=True)
    ds.to_json(str(hub_layout / "train.jsonl"))
    ds.select(range(5)).to_json(str(hub_layout / "test.jsonl"))
    want = fingerprint(load_split(spec(TINY / "prefs.jsonl", max_samples=20)).rows)
    for source in ("rows.json", "rows.parquet", "saved", "saved-dict", "hub-layout"):
        loaded = load_split(spec(tmp_path / source))
        assert fingerprint(loaded.rows) == want, source
        assert loaded.rows["index"] == list(range(20))
    assert len(load_split(spec(tmp_path / "saved-dict", split="test")).rows) == 5
    assert len(load_split(spec(tmp_path / "hub-layout", split="test")).rows) == 5


def test_missing_split_is_named(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"no split 'validation'; it has train"):
        load_split(spec(tmp_path / "d", split="validation"))


def test_conversational_rows_are_detected_including_the_implicit_prompt_form(tmp_path):
    assert load_split(spec(TINY / "prefs-chat.jsonl")).conversational is True
    assert load_split(spec(TINY / "prefs.jsonl")).conversational is False
    implicit = [
        {
            "chosen": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello ."},
            ],
            "rejected": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "go away ."},
            ],
        }
    ]
    (tmp_path / "implicit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in implicit))
    assert load_split(spec(tmp_path / "implicit.jsonl")).conversational is True


def test_max_samples_takes_the_first_rows():
    loaded = load_split(spec(TINY / "prefs.jsonl", max_samples=7))
    assert len(loaded) == 7 and loaded.rows[6]["prompt"] == ROWS[6]["prompt"]


def test_fingerprint_changes_with_any_row():
    import datasets

    a = datasets.Dataset.from_list(ROWS)
    b = datasets.Dataset.from_list([*ROWS[:-1], {**ROWS[-1], "rejected": ROWS[-1]["rejected"] + " !"}])
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) == fingerprint(datasets.Dataset.from_list(ROWS))


def test_unsupported_file_type_is_named(tmp_path):
    (tmp_path / "rows.csv").write_text("prompt,chosen,rejected\n")
    with pytest.raises(DataError, match=r"rows\.csv: unsupported file type '\.csv'"):
        load_split(spec(tmp_path / "rows.csv"))


def test_the_shipped_tiny_data_is_what_prefops_trainer_tiny_generates(tmp_path):
    from prefops_trainer.tiny import write_dataset

    write_dataset(tmp_path)
    for name in ("prefs.jsonl", "prefs-chat.jsonl", "prefs-split/train.jsonl", "prefs-split/test.jsonl"):
        assert (tmp_path / name).read_bytes() == (TINY / name).read_bytes(), name


def test_the_held_out_split_asks_arithmetic_questions_training_never_sees():
    def prompts(name: str) -> set[str]:
        return {json.loads(line)["prompt"] for line in (TINY / "prefs-split" / name).read_text().splitlines()}

    train, test = prompts("train.jsonl"), prompts("test.jsonl")
    sums = {p for p in test if " plus " in p}
    assert sums and not sums & train, "the held-out sums are new"
    assert test - sums <= train, "the colour questions are the ones training saw"
