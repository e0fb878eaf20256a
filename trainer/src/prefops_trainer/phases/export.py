"""The export phase: merge LoRA into the base weights, write safetensors + tokenizer + a model card to
``output.uri``, and the ``prefops.json`` manifest last, so its presence marks a complete model.

Weights are written as shards of at most ``output.maxShardSize`` (with ``model.safetensors.index.json`` when there are
several), one tensor, or a block of its rows, at a time (``adapters.weights``): the LoRA merge reads each base tensor
from its shard and adds the adapter's delta as peft does, and full fine-tuning's weights are re-cut by copying bytes,
so host memory does not grow with the model. Every tensor keeps the dtype it is stored in.

Re-running an interrupted export completes it: every file is stored with its sha256 (S3 user metadata), so a
re-run, whatever moment the first run died at (even SIGKILL between two files), sends only the files that had not
arrived whole; an earlier ``prefops.json`` at the destination is removed before anything is overwritten, so a
reader never sees a manifest beside files it does not describe.

The trained weights are those of the attempt the operator names (``PREFOPS_TRAINED_ATTEMPT``; in local mode the
run's own), taken only when their marker checks out and every file has the sha256 it records (``adapters.trained``),
so an older attempt still running never gets its weights published, and a file changed after training is refused
(exit 2, naming it).

With ``spec.output.gate`` the final evaluation (handed over with the trained weights, from the checked marker) is
compared with the bound first: a model that misses it is not written at all (:class:`GateNotMet`, exit 3; the
trained weights stay in the work storage), one that meets it records the verdict in ``prefops.json``. The manifest and
the card carry the model's lineage (``lineage``) and only the published part of the spec (``core.redact``).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .. import __version__
from ..adapters import metrics, storage, trained, weights, zero3
from ..core.errors import GateNotMet
from ..core.evaluation import Evaluation, judge
from ..core.reports import Described, EvaluationRecord, ExportReport, FileEntry, GateRecord, Handed, Manifest, Phases
from ..core.uris import Uri
from ..core.weights import NamesDiffer
from ..core.workspace import TRAINED_ATTEMPT_ENV, TRAINED_MARKER, Workspace, trained_attempt_of
from ..inputs import Inputs
from . import reports
from .card import MANIFEST, model_card
from .lineage import lineage

log = logging.getLogger(__name__)


def merge(base_dir: Path, adapter_dir: Path, out: Path, max_shard_bytes: int, trust_remote_code: bool = False) -> None:
    """Merge the LoRA adapter in ``adapter_dir`` into the base model in ``base_dir`` and write it to ``out`` as
    safetensors shards of at most ``max_shard_bytes`` (with an index when there are several), every tensor in the
    base's dtype.

    The merge streams, one tensor (a block of rows) at a time (``adapters.weights``): its memory does not grow with
    the model. Where the adapter's names do not map onto the base checkpoint's file by file (a family whose checkpoints
    transformers converts on load, such as fused mixture-of-experts layers: :class:`NamesDiffer`), peft merges on the
    loaded model instead, which holds the whole model in host memory; a warning says so."""
    try:
        weights.merge_lora(base_dir, adapter_dir, out, max_shard_bytes)
    except NamesDiffer as e:
        log.warning("%s: merging with peft on the whole model in memory instead of tensor by tensor", e)
        merge_in_memory(base_dir, adapter_dir, out, max_shard_bytes, trust_remote_code)


def merge_in_memory(
    base_dir: Path, adapter_dir: Path, out: Path, max_shard_bytes: int, trust_remote_code: bool = False
) -> None:
    """peft's ``merge_and_unload`` on the whole base model (in its stored dtype), saved as safetensors shards."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto", trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_bytes)


def file_table(root: Path) -> list[FileEntry]:
    """Every file under ``root`` with its size and sha256, sorted by path."""
    return [
        {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": storage.sha256_file(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def trained_workspace(inputs: Inputs) -> Workspace:
    """The run as the attempt whose trained weights are published sees it (``PREFOPS_TRAINED_ATTEMPT``)."""
    return _trained_workspace(inputs.ws, trained_attempt_of(os.environ))


@functools.cache
def _trained_workspace(ws: Workspace, named: int | None) -> Workspace:
    if named is not None:
        return ws.at(named)
    newest = trained.newest_attempt(ws)
    log.warning(
        "%s is not set (the operator predates it): exporting the newest attempt with complete trained weights, %s",
        TRAINED_ATTEMPT_ENV,
        newest,
    )
    return ws.at(ws.attempt if newest is None else newest)


def trained_result(inputs: Inputs) -> Handed:
    """What the train phase handed over with the weights (steps, metrics, the final evaluation), from a checked marker;
    error if it did not finish."""
    return trained.result(trained_workspace(inputs)).handed


def trained_dir(inputs: Inputs) -> Path:
    """The trained weights as a local folder (downloaded from storage when remote), every file checked against the
    marker; error if train did not finish."""
    ws = trained_workspace(inputs)
    return trained.fetch(ws, trained.result(ws))


def build_local(inputs: Inputs, out: Path) -> bool:
    """Write the exported model (without manifest) into ``out``; return whether LoRA was merged. Weights are written
    as shards of at most ``output.maxShardSize``."""
    trained = trained_dir(inputs)
    lora = (trained / "adapter_config.json").exists()
    shard = inputs.spec.output.max_shard_bytes
    if lora and inputs.spec.output.merge:
        merge(inputs.model_path, trained, out, shard, inputs.spec.model.trust_remote_code)
    elif zero3.is_partitioned(trained):  # ZeRO-3 full fine-tuning: each tensor cut from the ranks' partitions
        skipped = [TRAINED_MARKER, "training_args.bin", *zero3.file_names(trained), *weights.weight_file_names(trained)]
        shutil.copytree(trained, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*skipped))
        zero3.consolidate(trained, out, shard)
    else:
        full = not lora and bool(weights.weight_file_names(trained))
        skipped = [TRAINED_MARKER, "training_args.bin", *(weights.weight_file_names(trained) if full else ())]
        shutil.copytree(trained, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*skipped))
        if full:  # full fine-tuning: the weights re-cut to maxShardSize, a block of bytes at a time
            weights.reshard(trained, out, shard)
    inputs.tokenizer.save_pretrained(out)
    return lora


def run(inputs: Inputs) -> Manifest:
    """Export to ``spec.output.uri`` and return the manifest written there; :class:`GateNotMet` (nothing written)
    when the final evaluation misses ``spec.output.gate``."""
    metrics.enter("export")
    dest = inputs.spec.output.uri
    evaluation = trained_result(inputs).get("evaluation")
    gate = check_gate(inputs, evaluation)
    report: ExportReport = {}
    with reports.timed(report), tempfile.TemporaryDirectory(prefix="prefops-export-") as tmp:
        out = Path(tmp) / "model"
        out.mkdir()
        lora = build_local(inputs, out)
        phases = reports.gathered(trained_workspace(inputs), inputs.spec.precompute)
        described = _described(inputs, lora, evaluation, gate)
        files = file_table(out)  # the card's checksum count is of the weights/tokenizer files
        (out / "README.md").write_text(model_card(inputs, len(files), phases, lora, described))
        _extra_artifacts(inputs, out)
        files = file_table(out)
        _upload(out, dest, files)
    manifest = _manifest(files, phases | {"export": report}, described)
    storage.write_json(dest.join(MANIFEST), manifest)  # last: the model is complete
    reports.write(inputs.ws, "export", report)
    log.info("model exported to %s (%d files)", dest, len(files))
    return manifest


def check_gate(inputs: Inputs, evaluation: EvaluationRecord | None) -> GateRecord | None:
    """The gate's record for ``prefops.json`` (None without a gate); :class:`GateNotMet` when the final evaluation
    misses it, before anything is written to ``output.uri``."""
    gate = inputs.spec.output.gate
    if gate is None:
        return None
    verdict = judge(gate, Evaluation.from_json(evaluation) if evaluation else None)
    if not verdict.passed:
        where = str(trained_workspace(inputs).trained)
        raise GateNotMet(verdict.explanation(inputs.spec.output.uri.as_written, where), verdict.termination(where))
    log.info("spec.output.gate met: eval %s is %g (%s %g)", verdict.metric, verdict.value, verdict.kind, verdict.bound)
    return verdict.record()


def _described(inputs: Inputs, lora: bool, evaluation: EvaluationRecord | None, gate: GateRecord | None) -> Described:
    """What ``prefops.json`` says of the model besides its files and the phases' reports: the job, the base model,
    the algorithm, the final evaluation and the gate's verdict, and the lineage (allowlisted: see core.redact)."""
    job = inputs.job
    described: Described = {
        "format": 1,
        "job": {"name": job.name, "uid": job.metadata.uid},
        "model": {
            "source": job.spec.model.source.as_written,
            "dtype": inputs.dtype,
            "loraMerged": lora and job.spec.output.merge,
        },
        "algorithm": job.spec.algorithm.name,
        "lineage": lineage(inputs),
        "prefopsVersion": __version__,
    }
    if evaluation is not None:
        described["evaluation"] = evaluation
    if gate is not None:
        described["gate"] = gate
    return described


def _manifest(files: list[FileEntry], phases: Phases, described: Described) -> Manifest:
    """``prefops.json``: :func:`_described`, every file with its checksum, each phase's report, the metrics."""
    metrics = phases["train"].get("metrics", {}) if "train" in phases else {}
    return {**described, "files": files, "phases": phases, "metrics": metrics}


def _extra_artifacts(inputs: Inputs, out: Path) -> None:
    """Training curves beside the model, from the train phase's log history."""
    from ..adapters.plots import plot_training

    train = reports.read_train(trained_workspace(inputs)) or {}
    spec = inputs.spec
    title = f"{inputs.job.name}: {spec.algorithm.name} ({', '.join(spec.algorithm.losses)}), beta {spec.algorithm.beta}"
    plot_training(train.get("logHistory", []), out / "training-curves.png", title, train.get("evalHistory", []))


def _upload(local: Path, dest: Uri, files: list[FileEntry]) -> None:
    """Send ``files`` to ``dest``, each with its sha256; a file already there with that sha256 is not sent again."""
    storage.abort_incomplete_uploads(dest)
    if storage.exists(dest.join(MANIFEST)):
        storage.remove(dest.join(MANIFEST))  # no complete-looking model while files change underneath
    for f in files:
        target = dest.join(f["path"])
        if storage.stored_sha256(target) != f["sha256"]:
            storage.upload_file(local / f["path"], target, sha256=f["sha256"])
