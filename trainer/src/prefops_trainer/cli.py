"""``prefops-trainer``: run a whole job locally, or one phase as the operator's pods do.

Heavy libraries (torch, transformers, TRL) are imported only inside the commands, so ``--help`` is instant.
Exit codes: 0 done; 2 the job's input is wrong (spec, data, paths, a stale cache, data in storage that fails an
integrity check) and a retry cannot help; 3 the model missed ``spec.output.gate`` and was not published; 75 the phase
stopped cleanly on SIGTERM (training after saving a checkpoint at the next step boundary): resume it; 1 with one
paragraph: an outage of storage or the Hub outlasted the retries; anything else is a crash a retry may cure. The
reason also goes to ``/dev/termination-log`` when it exists, where Kubernetes shows it in the pod's status; a
successful ``precompute`` leaves its cache hit there, a successful ``train`` its final evaluation, an ``export`` that
missed the gate the verdict (docs/contract.md §4).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .core.errors import GateNotMet, Interrupted, TransientError, UserError
from .core.reports import Manifest, TrainReport, gate_bound
from .core.rules.userinfo import redact

if TYPE_CHECKING:
    from .adapters.metrics import Phase
    from .core.spec import Job
    from .inputs import Inputs

log = logging.getLogger("prefops_trainer")

TERMINATION_LOG = "/dev/termination-log"
PLAN_WONT_FIT = 4  # ``plan``: the job does not fit the device memory


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prefops-trainer",
        description="Preference-optimization training (DPO, CPO, SimPO, ORPO...) from a PreferenceTrainingJob spec.",
        epilog="Exit codes: 0 done, 2 invalid input (do not retry), 3 the model missed spec.output.gate (not "
        "published), 75 stopped on SIGTERM (resume it), other: failure (retry may help).",
    )
    p.add_argument("--log-level", default=os.environ.get("PREFOPS_LOG_LEVEL", "INFO"), help="default: INFO")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("job", type=Path, metavar="JOB.yaml", help="a PreferenceTrainingJob manifest")
        return c

    cmd("run", "run every phase on this machine: precompute, train, export")
    pre = cmd("precompute", "compute reference log-probs for one shard of the dataset into the shared cache")
    pre.add_argument("--shard", type=int, default=0, help="this worker's shard index (default 0)")
    pre.add_argument("--num-shards", type=int, default=None, help="number of shards (default: spec.reference.workers)")
    cmd("train", "train (under torchrun when the job has several processes), resuming from the newest checkpoint")
    cmd("export", "merge LoRA, write the model, its card and the prefops.json manifest to spec.output.uri")
    cmd(
        "validate",
        "check the job spec and print it with every default filled in; for a PreferenceTrainingSweep, "
        "every trial's job (the problems name the trial at fault)",
    )
    plan = cmd(
        "plan",
        "will it fit? per-device memory by component for each phase, host RAM and disk per pod, from the spec and the "
        "model's config.json (no weights are downloaded); a sweep's every trial; exit 4 when it does not fit",
    )
    plan.add_argument("--gpu-memory", metavar="QUANTITY", help="each GPU's memory, e.g. 80Gi (default: "
                      "spec.resources.gpuMemory)")  # fmt: skip
    plan.add_argument("--output", choices=("table", "json"), default="table", help="default: table")
    plan.add_argument("--model-config", type=Path, metavar="config.json", help="the model's config.json (default: "
                      "read from spec.model.source)")  # fmt: skip
    plan.add_argument("--reward-model-config", type=Path, metavar="config.json", help="Online DPO: the reward "
                      "model's config.json (default: read from spec.rewardModel.source)")  # fmt: skip
    sweep = sub.add_parser(
        "sweep",
        help="run a PreferenceTrainingSweep's trials here, one after another, and name the best",
        description="run a PreferenceTrainingSweep's trials on this machine, one after another with the shared "
        "reference cache; print the comparison table and write sweep.json and sweep.png under the template's "
        "output.uri. Exit 0 when a best trial was found, 1 when no trial reported the objective.",
    )
    sweep.add_argument("sweep", type=Path, metavar="SWEEP.yaml", help="a PreferenceTrainingSweep manifest")
    return p


_program = False  # main() read sys.argv: this process is prefops-trainer itself, not a test calling main([...])


def main(argv: list[str] | None = None) -> NoReturn:
    """``prefops-trainer`` (``argv`` None: the program, which ends without the interpreter's teardown, :func:`_exit`)
    or a caller's command line (which gets ``SystemExit``)."""
    global _program
    _program = argv is None
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    from .adapters import interrupt

    interrupt.install()
    try:
        if args.command in FILE_COMMANDS:
            _exit(FILE_COMMANDS[args.command](args))
        from .adapters.jobfile import load_job

        job = load_job(args.job)
        attempt = os.environ.get("PREFOPS_ATTEMPT")
        log.info("%s: job %s/%s%s", args.command, job.namespace, job.name, f", attempt {attempt}" if attempt else "")
        code = COMMANDS[args.command](job, args)
    except UserError as e:
        _fail(str(e), UserError.exit_code)
    except GateNotMet as e:
        if args.command == "run":
            print(f"prefops: the model was not published\n  {e}")  # noqa: T201
        _fail(str(e), GateNotMet.exit_code, json.dumps(e.termination))
    except TransientError as e:
        _fail(str(e), TransientError.exit_code)
    except Interrupted as e:
        _fail(str(e), Interrupted.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:
        log.exception("failed")
        _fail(f"{type(e).__name__}: {e}", 1)
    _ended("failed" if code else "done")
    _exit(code)


def _exit(code: int) -> NoReturn:
    """End the process with ``code``. The program (and every rank under torchrun) ends at once, its logs flushed,
    skipping the interpreter's teardown: its phase's result is written by now and nothing runs in the background
    (temporary directories are context managers), while native threads still run. Torn down in no set order with the
    rest of torch, they aborted a finished phase now and then (SIGABRT, "terminate called without an active
    exception", exit -6): a rank's gloo threads (``gloo_tcp_loop``, ``pt_gloo_runloop``, which
    ``destroy_process_group`` stops only when nothing else holds the group, and DDP's reducer, accelerate and DeepSpeed
    do), and once in a full test run a single-process precompute after its cache was complete."""
    if not _program and "LOCAL_RANK" not in os.environ:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _ended(state: Phase) -> None:
    """The phase metric's last word: ``done`` or ``failed`` (a no-op where this process serves no metrics)."""
    from .adapters import metrics

    metrics.enter(state)


def _fail(message: str, code: int, termination: str | None = None) -> NoReturn:
    """Log ``message``, leave ``termination`` (default: the message) as the termination message, exit ``code``; any
    credentials in a URI they quote are hidden (:mod:`.core.rules.userinfo`)."""
    message, termination = redact(message), redact(termination) if termination else None
    _ended("failed")
    log.error("%s", message)
    error_dir = os.environ.get("PREFOPS_ERROR_DIR")
    word = {UserError.exit_code: "rank", Interrupted.exit_code: "interrupted-rank"}.get(code)
    if error_dir and word:  # for the launcher (launch.RankWords)
        Path(error_dir, f"{word}-{os.environ.get('RANK', '0')}").write_text(message)
    _termination_message(termination or message)
    _exit(code)


def _termination_message(message: str) -> None:
    """Kubernetes shows this file's content in the pod's status (``terminationMessagePath``)."""
    path = os.environ.get("PREFOPS_TERMINATION_LOG", TERMINATION_LOG)
    if os.path.exists(path) and os.access(path, os.W_OK):
        with open(path, "w") as f:
            f.write(message[:4000])


def setup_logging(level: str) -> None:
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("prefops_trainer").setLevel(level.upper())
    if level.upper() != "DEBUG":
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|transformers|trl|peft|accelerate)\.")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _serve_metrics(job: Job) -> None:
    from .adapters import metrics

    metrics.serve(job.name, job.namespace)


def cmd_validate(args: argparse.Namespace) -> int:
    """Print the job with every default filled in, or each trial's job of a sweep as one YAML document each."""
    import yaml

    from .adapters.jobfile import load_jobs

    docs = [job.model_dump(mode="json", by_alias=True) for job in load_jobs(args.job)]
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")  # noqa: T201
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import local_sweep

    return local_sweep.run(args.sweep)


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the plan of a job, or of every trial of a sweep (table or JSON); exit 0 when it fits or cannot be
    judged, 4 when it does not fit."""
    from .planning import plan_file, render

    plans = plan_file(args.job, args.gpu_memory, args.model_config, args.reward_model_config)
    print(render(plans, args.output))  # noqa: T201
    return PLAN_WONT_FIT if any(p.fits is False for p in plans.values()) else 0


def cmd_precompute(job: Job, args: argparse.Namespace) -> int:
    from . import launch
    from .inputs import load_inputs
    from .phases import pod_ranks, precompute

    inputs = load_inputs(job)  # check spec, data and paths here: a user error exits 2 before any rank starts
    if launch.needs_torchrun_precompute(job, pod_ranks.sharding(inputs) == "zero3"):
        return _torchrun_precompute(
            job, args.job, inputs, args.shard, precompute.check(inputs, args.shard, args.num_shards)
        )
    _serve_metrics(job)
    report = precompute.run(inputs, args.shard, args.num_shards)
    if "LOCAL_RANK" not in os.environ:  # under torchrun the launcher writes it
        _termination_message(json.dumps({"cacheHit": report["cacheHit"]}))  # docs/contract.md §4
    return 0


def _torchrun_precompute(job: Job, job_path: Path, inputs: Inputs, shard: int, num_shards: int) -> int:
    """Shard ``shard`` computed by every process of this pod under torchrun; the launcher leaves the cache hit the
    first process reported as the termination message."""
    from . import launch
    from .phases import pod_ranks, reports

    told = {pod_ranks.SHARDING_ENV: pod_ranks.sharding(inputs)}
    code = launch.torchrun_precompute(job, job_path, shard, num_shards, told)
    report = reports.read_precompute(inputs.ws, shard, num_shards) if code == 0 else None
    if report is not None:
        _termination_message(json.dumps({"cacheHit": report["cacheHit"]}))  # docs/contract.md §4
    return code


def cmd_train(job: Job, args: argparse.Namespace) -> int:
    from . import launch
    from .inputs import load_inputs

    if launch.needs_torchrun(job):
        from .phases import reports

        inputs = load_inputs(job)  # check spec, data and paths here: a user error exits 2 before any rank starts
        code = launch.torchrun_train(job, args.job)
        if code == 0:  # the launcher reports what rank 0 left in the phase's report
            _report_train(reports.read_train(inputs.ws) or {})
        return code
    from .phases import train

    _serve_metrics(job)
    _report_train(train.run(load_inputs(job)))
    return 0


def _report_train(report: TrainReport) -> None:
    """The train phase's termination message (docs/contract.md §7): ``{"evaluation": {"step", "metrics"},
    "prefixSharing": "on" | "off: <reason>"}``, each when the phase has it; under torchrun the launcher writes it,
    not the ranks."""
    doc: dict[str, Any] = {}
    if evaluation := report.get("evaluation"):
        doc["evaluation"] = {"step": evaluation["step"], "metrics": evaluation["metrics"]}
    if "prefixSharing" in report:
        doc["prefixSharing"] = report["prefixSharing"]
    if doc and "LOCAL_RANK" not in os.environ:
        _termination_message(json.dumps(doc, separators=(",", ":")))


def cmd_export(job: Job, args: argparse.Namespace) -> int:
    from .inputs import load_inputs
    from .phases import export

    _serve_metrics(job)
    manifest = export.run(load_inputs(job))
    print(f"model: {job.spec.output.uri.as_written} ({len(manifest['files'])} files)")  # noqa: T201
    return 0


def cmd_run(job: Job, args: argparse.Namespace) -> int:
    from . import launch
    from .adapters import metrics
    from .inputs import load_inputs
    from .phases import export, reports, train

    _serve_metrics(job)
    inputs = load_inputs(job)
    cache_hit = None
    if job.spec.precompute:
        code, cache_hit = _precompute_locally(job, args.job, inputs)
        if code:
            return code
    if launch.needs_torchrun(job):
        with metrics.paused():
            code = launch.torchrun_train(job, args.job)
        if code:
            return code
        trained: TrainReport = reports.read_train(inputs.ws) or {}
    else:
        trained = train.run(inputs)
    manifest = export.run(inputs)
    _print_summary(job, manifest, cache_hit, trained.get("prefixSharing"))
    return 0


def _precompute_locally(job: Job, job_path: Path, inputs: Inputs) -> tuple[int, bool]:
    """Every precompute shard, one after another, each by ``spec.resources``' processes (under torchrun when more
    than one, or ZeRO-3): the exit code (torchrun's of the first shard that failed) and whether the cache was a
    hit."""
    from . import launch
    from .adapters import metrics
    from .phases import pod_ranks, precompute, reports

    workers, mode = job.spec.reference.workers, pod_ranks.sharding(inputs)
    if not launch.needs_torchrun_precompute(job, mode == "zero3"):
        shards = [precompute.run(inputs, shard, workers) for shard in range(workers)]  # every one: no short cut
        return 0, all(r["cacheHit"] for r in shards)
    with metrics.paused():
        for shard in range(workers):
            if code := launch.torchrun_precompute(job, job_path, shard, workers, {pod_ranks.SHARDING_ENV: mode}):
                return code, False
    found = [reports.read_precompute(inputs.ws, shard, workers) for shard in range(workers)]
    return 0, all(r is not None and r["cacheHit"] for r in found)


def _print_summary(job: Job, manifest: Manifest, cache_hit: bool | None, shared: str | None) -> None:
    metrics = manifest["metrics"]
    lines = [f"prefops: job {job.name} done"]
    if cache_hit is not None:
        state = "hit (precompute skipped)" if cache_hit else "miss (computed)"
        lines.append(f"  reference cache: {state}  cacheHit={str(cache_hit).lower()}")
    if shared is not None:
        lines.append(f"  prefix sharing: {shared}")
    evaluation = manifest.get("evaluation")
    held_out_metrics = evaluation["metrics"] if evaluation else {}
    for key in ("loss", "rewards/accuracies", "rewards/margins"):
        if key in metrics:
            mean = metrics.get(f"{key}_last_epoch_mean")
            extra = f"  (last-epoch mean {mean:.4f})" if mean is not None else ""
            value = held_out_metrics.get(key)
            held_out = f"  eval {value:.4f}" if value is not None else ""
            lines.append(f"  final {key}: {metrics[key]:.4f}{extra}{held_out}")
    if evaluation:
        lines.append(f"  evaluated on the {evaluation['split']} split at step {evaluation['step']}")
    if "gate" in manifest:
        gate = manifest["gate"]
        kind, bound = gate_bound(gate)
        lines.append(f"  gate: eval {gate['metric']} {gate['value']:.4f} ({kind} {bound:g}): passed")
    uri = job.spec.output.uri.as_written
    lines.append(f"  model: {uri} ({len(manifest['files'])} files, manifest prefops.json)")
    print("\n".join(lines))  # noqa: T201


COMMANDS: dict[str, Callable[[Job, argparse.Namespace], int]] = {
    "run": cmd_run,
    "precompute": cmd_precompute,
    "train": cmd_train,
    "export": cmd_export,
}
#: The commands that read their file themselves (a job or a sweep), before any job is loaded.
FILE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sweep": cmd_sweep,
    "plan": cmd_plan,
    "validate": cmd_validate,
}
