"""Reading training progress from the trainer's Prometheus text (docs/contract.md §5). Pure, no server."""

from __future__ import annotations

from support.operator_core import at

from prefops_operator.core.progress import parse_exposition, precompute_progress, shard_counts, training_progress

TRAIN_TEXT = """\
# HELP prefops_trainer_step Optimizer steps done.
# TYPE prefops_trainer_step gauge
prefops_trainer_step{job="j",namespace="ns",phase="train"} 120.0
prefops_trainer_total_steps{job="j",namespace="ns",phase="train"} 1000.0
prefops_trainer_epoch{job="j",namespace="ns",phase="train"} 0.36
prefops_trainer_loss{job="j",namespace="ns",phase="train"} 0.4213
prefops_trainer_reward_accuracy{job="j",namespace="ns",phase="train"} 0.8125
prefops_trainer_memory_bytes{job="j",namespace="ns",phase="train",rank="0",kind="rss"} 1.2e+09
prefops_trainer_phase{job="j",namespace="ns",prefops_trainer_phase="train"} 1.0
"""


def test_training_progress_comes_from_the_rank_0_gauges():
    progress = training_progress(parse_exposition(TRAIN_TEXT), at(5))
    assert (progress.step, progress.total_steps, progress.epoch) == (120, 1000, 0.36)
    assert (progress.loss, progress.reward_accuracy) == (0.4213, 0.8125)
    assert progress.display == "120/1000"
    assert progress.last_scrape_time == at(5)


def test_precompute_progress_sums_the_shards():
    shard = (
        'prefops_trainer_precompute_pairs_done{{phase="precompute"}} {}\n'
        'prefops_trainer_precompute_pairs_total{{phase="precompute"}} 500\n'
    )
    shards = [shard_counts(parse_exposition(shard.format(done))) for done in (100, 250)]
    assert shards[0] == {"pairs_done": 100, "pairs_total": 500}  # numbers kept between scrapes, not the text
    progress = precompute_progress(shards, at(1))
    assert (progress.pairs_done, progress.pairs_total) == (350, 1000)
    assert progress.display == "350/1000 pairs"


def test_an_endpoint_without_trainer_metrics_yet_gives_no_progress():
    assert training_progress(parse_exposition("# nothing yet\npython_gc_objects_collected_total 12\n"), at(0)) is None
    assert precompute_progress([], at(0)) is None


def test_the_exposition_parser_skips_comments_and_junk_and_keeps_labels():
    samples = parse_exposition('# TYPE x gauge\nx{a="1",b="two words"} 3\nnot a sample\ny NaN-ish\nz 4e2\n')
    assert samples == [("x", {"a": "1", "b": "two words"}, 3.0), ("z", {}, 400.0)]
