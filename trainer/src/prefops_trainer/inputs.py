"""What every phase loads first: the model folder, the tokenizer, the dataset splits tokenized as TRL does,
and the reference-cache key of each split. Loaded once per process and shared by the phases it runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .data import LoadedDataset, fingerprint, load_split
from .errors import SpecError
from .modelio import hash_files, load_model, load_tokenizer, model_dir, resolve_dtype
from .refcache import RefCache, cache_key
from .spec import Job
from .tokenize import tokenize_pairs, tokenize_unpaired
from .workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    job: Job
    ws: Workspace
    model_path: Path
    tokenizer: object
    splits: dict[str, LoadedDataset]  # "train" and, with dataset.evalSplit, "eval"
    _tokenized: dict[str, object] = field(default_factory=dict)

    @property
    def spec(self):
        return self.job.spec

    @cached_property
    def dtype(self) -> str:
        return resolve_dtype(self.spec.model)

    @cached_property
    def model_files(self) -> dict[str, str]:
        return hash_files(self.model_path)

    @property
    def kto_kl(self) -> bool:
        """KTO estimates its KL term from completions rotated within each training batch (not APO-zero)."""
        return self.spec.algorithm.losses[0] == "kto"

    def tokenized(self, split: str):
        """The split tokenized as the algorithm's TRL trainer does, in the form the precompute pass reads."""
        if split not in self._tokenized:
            ds, spec = self.splits[split], self.spec
            if spec.algorithm.info.family == "kto":
                batch = spec.training.per_device_batch_size
                rows = tokenize_unpaired(ds.rows, self.tokenizer, spec.dataset, ds.source, batch, self.kto_kl)
            else:
                rows = tokenize_pairs(ds.rows, self.tokenizer, spec.dataset, ds.source)
            self._tokenized[split] = rows
        return self._tokenized[split]

    def tokenized_rows(self, split: str, positions: range):
        """Rows ``positions`` of the split, tokenized: only those rows for paired data (a shard of the reference pass
        tokenizes its own rows); KTO's KL completions pair rows across a batch, so it tokenizes the split."""
        if split in self._tokenized or self.spec.algorithm.info.family == "kto":
            return self.tokenized(split).select(positions)
        ds = self.splits[split]
        return tokenize_pairs(ds.rows.select(positions), self.tokenizer, self.spec.dataset, ds.source)

    def ref_cache(self, split: str) -> RefCache:
        d = self.spec.dataset
        extra = None
        if self.spec.algorithm.info.family == "kto":
            extra = {"kto": {"klBatch": self.spec.training.per_device_batch_size, "kl": self.kto_kl}}
        data = fingerprint(self.splits[split].rows)
        key = cache_key(self.model_files, data, d.max_length, d.truncation_mode, self.dtype, extra)
        return RefCache.at(self.ws.storage, key)

    def load_model(self):
        model = load_model(self.spec.model, self.model_path)
        check_lora_targets(self.job, model)
        return model


def load_inputs(job: Job) -> Inputs:
    ws = Workspace.for_job(job)
    path = model_dir(job.spec.model)
    tok = load_tokenizer(path, job.spec.model.trust_remote_code)
    kind = job.spec.algorithm.info.data
    splits = {"train": load_split(job.spec.dataset, kind=kind)}
    if job.spec.dataset.eval_split:
        splits["eval"] = load_split(job.spec.dataset, job.spec.dataset.eval_split, kind=kind)
    log.info(
        "job %s/%s: model %s, %s",
        job.namespace,
        job.name,
        job.spec.model.source,
        ", ".join(f"{n} {len(s)} pairs" for n, s in splits.items()),
    )
    return Inputs(job, ws, path, tok, splits)


def check_lora_targets(job: Job, model) -> None:
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
