"""What every phase reads first: the model folder, the tokenizer, the dataset splits tokenized as TRL does, and the
reference cache of each split. Loaded once per process from the parsed job and handed to the phases it runs:
spec → inputs → phases."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .adapters.data import LoadedDataset, fingerprint, load_split
from .adapters.modelio import (
    check_fits,
    config_json,
    hash_files,
    load_model,
    load_tokenizer,
    model_dir,
    resolve_dtype,
)
from .adapters.refcache import RefCache
from .adapters.sources import cache_dir
from .compute.tokenize import tokenize_pairs, tokenize_unpaired
from .core.cachekey import cache_key
from .core.errors import SpecError
from .core.prefix_families import verdict
from .core.spec import Job, JobSpec
from .core.trlconfig import trl_trainer
from .core.workspace import Workspace, attempt_of

if TYPE_CHECKING:
    from datasets import Dataset
    from torch.nn import Module
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """A job's inputs, loaded once; the tokenized splits and the model-file digests are computed on first use.

    Attributes:
        job: the parsed job.
        ws: its storage layout.
        model_path: the local folder of ``spec.model``.
        tokenizer: the model's tokenizer (a missing pad token set to EOS).
        splits: ``train`` and, with ``spec.dataset.evalSplit``, ``eval``: checked rows with an ``index`` column.
    """

    job: Job
    ws: Workspace
    model_path: Path
    tokenizer: PreTrainedTokenizerBase
    splits: dict[str, LoadedDataset]
    _tokenized: dict[str, Dataset] = field(default_factory=dict)
    _caches: dict[str, RefCache] = field(default_factory=dict, init=False, repr=False)

    @property
    def spec(self) -> JobSpec:
        return self.job.spec

    @cached_property
    def dtype(self) -> str:
        return resolve_dtype(self.spec.model)

    @cached_property
    def model_files(self) -> dict[str, str]:
        return hash_files(self.model_path)

    def tokenized(self, split: str) -> Dataset:
        """The split tokenized as the algorithm's TRL trainer does, in the form the precompute pass reads."""
        if split not in self._tokenized:
            self._tokenized[split] = self._tokenize(split)
        return self._tokenized[split]

    def tokenized_rows(self, split: str, positions: Sequence[int]) -> Dataset:
        """Rows ``positions`` of the split, tokenized, without tokenizing the rest (a shard of the reference pass,
        the rows the train phase checks the cache on): for paired data those rows alone; for KTO the training batches
        that hold them, since a row's KL completion is its batch neighbour's."""
        if split in self._tokenized:
            return self.tokenized(split).select(positions)
        if self.spec.algorithm.info.data != "unpaired":
            return self._tokenize(split, positions)
        span = kl_batches(positions, self.spec.training.per_device_batch_size, len(self.splits[split].rows))
        at = {position: i for i, position in enumerate(span)}
        return self._tokenize(split, span).select([at[p] for p in positions])

    def _tokenize(self, split: str, positions: Sequence[int] | None = None) -> Dataset:
        """Rows ``positions`` of the split (None: every row) tokenized as the algorithm's TRL trainer does (KTO:
        ``positions`` whole training batches, whose KL completions pair rows among themselves)."""
        ds, spec = self.splits[split], self.spec
        rows = ds.rows if positions is None else ds.rows.select(positions)
        if spec.algorithm.info.data == "unpaired":
            batch, kl = spec.training.per_device_batch_size, spec.algorithm.kl_term
            return tokenize_unpaired(rows, self.tokenizer, spec.dataset, ds.source, batch, kl)
        return tokenize_pairs(rows, self.tokenizer, spec.dataset, ds.source)

    def ref_cache(self, split: str) -> RefCache:
        """The split's reference cache; its key fingerprints every row, so it is computed once."""
        if split not in self._caches:
            self._caches[split] = self._ref_cache(split)
        return self._caches[split]

    def _ref_cache(self, split: str) -> RefCache:
        d = self.spec.dataset
        extra: dict[str, Any] | None = None
        if self.spec.algorithm.info.data == "unpaired":  # KTO pairs each completion with a KL one per batch
            extra = {"kto": {"klBatch": self.spec.training.per_device_batch_size, "kl": self.spec.algorithm.kl_term}}
        data = fingerprint(self.splits[split].rows)
        key = cache_key(self.model_files, data, d.max_length, d.truncation_mode, self.dtype, extra)
        return RefCache(self.ws.refcache(key), key, self.ws.run)

    @property
    def packs_pairs(self) -> bool:
        """Training packs pairs: prefix sharing asked, a DPO trainer, a model family it packs (by config.json)."""
        spec = self.spec
        if not (spec.training.prefix_sharing and trl_trainer(spec).trainer == "DPOTrainer"):
            return False
        return verdict(config_json(self.model_path)).packed

    def load_model(self) -> PreTrainedModel:
        model = load_model(self.spec.model, self.model_path, self.packs_pairs)
        check_lora_targets(self.job, model)
        return model


def load_inputs(job: Job) -> Inputs:
    ws = Workspace.for_job(job, cache_dir(), attempt_of(os.environ))
    path = model_dir(job.spec.model)
    check_fits(job.spec, path)
    tok = load_tokenizer(path, job.spec.model.trust_remote_code)
    kind = job.spec.algorithm.info.data
    splits = {"train": load_split(job.spec.dataset, kind=kind)}
    if job.spec.dataset.eval_split:
        splits["eval"] = load_split(job.spec.dataset, job.spec.dataset.eval_split, kind=kind)
    log.info(
        "job %s/%s: model %s, %s",
        job.namespace,
        job.name,
        job.spec.model.source.as_written,
        ", ".join(f"{n} {len(s)} pairs" for n, s in splits.items()),
    )
    return Inputs(job, ws, path, tok, splits)


def check_lora_targets(job: Job, model: Module) -> None:
    """Fail naming ``spec.model.lora.targetModules`` when a target matches no module of the model."""
    lora = job.spec.model.lora
    if lora is None or list(lora.target_modules) == ["all-linear"]:
        return
    names = [n for n, _ in model.named_modules() if n]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    bad = [t for t in lora.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if bad:
        raise SpecError(
            f"spec.model.lora.targetModules: {', '.join(map(repr, bad))} matches no module of the model; "
            f"its modules include {', '.join(leaves[:20])} (or use [all-linear])"
        )


def kl_batches(positions: Sequence[int], batch: int, n_rows: int) -> list[int]:
    """Every position of the training batches (``batch`` rows each, from the first row on) that hold ``positions``:
    TRL pairs each KTO completion with its batch neighbour's (a batch never drops a row: ours refuses those rows)."""
    starts = sorted({p - p % batch for p in positions})
    return [i for start in starts for i in range(start, min(start + batch, n_rows))]
