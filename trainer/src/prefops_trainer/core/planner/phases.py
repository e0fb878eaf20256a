"""Each phase's plan: per-device memory by component at the phase's peak, and host RAM, disk and CPUs per pod.

A training step has three moments that can be its peak, and the plan takes the largest:

- ``generation`` (Online DPO): sampling two completions per prompt, with their KV cache;
- ``backward``: the forward is done, so every saved activation is alive, and backward starts: first the LM head's
  backward on its tiles, then each layer's (its gradients in flight, and with gradient checkpointing its recomputed
  activations), whichever needs more; gradients are alive too when they outlive a step's start (gradient
  accumulation, DDP's buckets, DeepSpeed's partitions), else they are freed at every step
  (``zero_grad(set_to_none=True)``);
- ``optimizer step``: activations are gone, every gradient is alive, DeepSpeed adds its float32 gradient partition.

The components of the largest moment sum to its total. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import terms
from .job import DTYPE_BYTES, PlanJob
from .model import ModelShape
from .terms import GIB, MicroBatch, Setup

COMPONENTS = (
    "weights",
    "trainableParameters",
    "gradients",
    "optimizerStates",
    "activations",
    "logits",
    "packedSequences",
    "referenceModel",
    "rewardModel",
    "generation",
    "communication",
    "overhead",
)
#: host memory of one trainer process before it loads anything: Python, torch, transformers, TRL, DeepSpeed
PROCESS_BASELINE_GPU, PROCESS_BASELINE_CPU = 3 * GIB, 2 * GIB
#: /cache besides the model and checkpoints: the dataset download and tokenized copy, torch extensions, logs
DATASET_ALLOWANCE, SCRATCH = 4 * GIB, 2 * GIB
#: transformers 5's ``save_pretrained`` default max_shard_size, the most one safetensors file holds
MAX_SHARD = 50 * 10**9
#: the export's streamed LoRA merge (trainer adapters/weights.py) besides the process: a 16 MiB block of a tensor's
#: rows in its copies (as read, in float32, the delta, the sum) and one layer's A and B
STREAMED_MERGE = GIB // 2
#: model families whose checkpoints transformers converts on load (fused experts, a multimodal layout, a renamed
#: router): the export merges their LoRA with peft on the whole model in memory (tests/trainer/test_export_merge.py)
CONVERTED_CHECKPOINTS = frozenset(
    {"mixtral", "qwen3_moe", "phimoe", "olmoe", "deepseek_v3", "gemma3", "qwen3_next", "minimax"}
)
#: DeepSpeed's estimators' margin on host memory for offloaded states (additional_buffer_factor)
OFFLOAD_BUFFER = 1.5


@dataclass(frozen=True)
class DevicePlan:
    """One device at the phase's peak: ``components`` (every key of :data:`COMPONENTS`) sum to the total."""

    components: dict[str, int]
    peak_at: str

    @property
    def total(self) -> int:
        return sum(self.components.values())


@dataclass(frozen=True)
class PhasePlan:
    """One phase: ``pods`` alike (the first one's disk, which holds rank 0's checkpoints), each with ``processes``
    processes and ``gpus`` GPUs; ``device`` is None for a phase that uses no accelerator memory (export merges on the
    CPU). ``cpu`` is a floor in millicores, not a measurement: a core per process on GPU nodes, half a core per
    process on CPU-only ones (the pods may use more when the node has it)."""

    name: str
    pods: int
    processes: int
    gpus: int
    device: DevicePlan | None
    host: int
    disk: int
    cpu: int  # millicores


def _moment(peak_at: str, **parts: int) -> DevicePlan:
    return DevicePlan({k: int(parts.get(k, 0)) for k in COMPONENTS}, peak_at)


def _with_overhead(plan: DevicePlan, gpu: bool) -> DevicePlan:
    if not gpu:
        return plan
    extra = terms.CUDA_CONTEXT + int(terms.FRAGMENTATION * plan.total)
    return DevicePlan({**plan.components, "overhead": extra}, plan.peak_at)


def _largest(*plans: DevicePlan, gpu: bool) -> DevicePlan:
    return _with_overhead(max(plans, key=lambda p: p.total), gpu)


# -- training ----------------------------------------------------------------------------------------------------


def training_device(s: Setup, reward: ModelShape | None) -> DevicePlan:
    job, mb = s.job, terms.training_batch(s.job)
    static = {
        "weights": terms.weights(s),
        "trainableParameters": terms.trainable_extra(s),
        "optimizerStates": terms.optimizer_states(s),
        "referenceModel": reference_model(s),
        "rewardModel": reward_model(s, reward),
        "communication": terms.communication(s),
    }
    persistent = s.deepspeed or s.world > 1 or job.accumulation > 1
    head = terms.logits(s, mb)
    backward = _moment(
        "backward",
        **static,
        gradients=terms.gradients(s, at_step=False) if persistent else 0,
        activations=terms.saved_activations(s, mb) + max(0, terms.backward_extra(s, mb) - head),
        logits=head,
        packedSequences=terms.packed_sequences(s, mb),
    )
    step = _moment("optimizer step", **static, gradients=terms.gradients(s, at_step=True))
    moments = [backward, step]
    if job.family == "online-dpo":
        moments.append(_moment("generation", **static, generation=generation(s, reward)))
    return _largest(*moments, gpu=job.gpu)


def reference_model(s: Setup) -> int:
    """A reference model on the device: computed online (``reference.precompute: false``, and Online DPO) with full
    fine-tuning; with LoRA the reference is the base model with its adapter disabled, so it costs nothing."""
    online = (s.job.reference_based and not s.job.precompute) or s.job.family == "online-dpo"
    if not online or s.lora:
        return 0
    return terms.weights(s)


def reward_model(s: Setup, reward: ModelShape | None) -> int:
    """Online DPO's judge, in its own dtype, on every device (ZeRO-3 partitions it too)."""
    if s.job.family != "online-dpo" or reward is None:
        return 0
    total = reward.params * DTYPE_BYTES[s.job.reward_compute_dtype]
    return -(-total // s.world) if s.job.zero_stage == 3 else total


def generation(s: Setup, reward: ModelShape | None) -> int:
    """Online DPO's sampling: the KV cache of two completions per prompt up to ``maxLength``, float32 logits of the
    next token, and the reward model's forward over the pairs (its largest layer's activations)."""
    rows, n, sh, b = 2 * s.job.batch, s.job.max_length, s.shape, s.bytes
    cache = rows * n * sh.layers * 2 * sh.kv_width * b
    sampling = 2 * rows * sh.vocab * 4
    judge = rows * n * (reward.hidden * 4 + reward.intermediate * 2 * b) if reward else 0
    return cache + sampling + judge


def training_host(s: Setup, device: DevicePlan) -> int:
    """Per pod: each process's baseline, and the larger of the model each process loads on the CPU before moving it
    (ZeRO-3 partitions it at load) and what stays on the host: the states ``offload: cpu`` keeps in pinned memory
    (DeepSpeed's 1.5 margin), or on a CPU-only pod every process's device memory."""
    job, procs = s.job, s.job.processes_per_node
    baseline = procs * (PROCESS_BASELINE_GPU if job.gpu else PROCESS_BASELINE_CPU)
    load = procs * (terms.weights(s) if job.zero_stage == 3 else s.params * s.bytes)
    if not job.gpu:
        return baseline + max(load, procs * device.total)
    offload = 0
    if job.offload and job.zero_stage:
        states = 16 * s.trainable + (2 * s.params if job.zero_stage == 3 else 0)
        offload = int(procs * states / s.world * OFFLOAD_BUFFER)
    return baseline + max(load, offload)


def training_disk(s: Setup) -> int:
    """Per pod (the first: rank 0 writes the weights): the model download, the dataset, the checkpoints kept plus
    the one being written (trained weights or adapter, and this pod's share of the optimizer states), the final
    weights handed to export."""
    job = s.job
    trained = s.trainable * (s.adapter_bytes if s.lora else s.bytes)
    optimizer = (12 * s.trainable // s.world) * job.processes_per_node if s.deepspeed else 2 * trained
    checkpoints = (job.checkpoints_to_keep + 1) * (trained + optimizer)
    return model_files(s) + DATASET_ALLOWANCE + SCRATCH + checkpoints + trained


def model_files(s: Setup) -> int:
    """The model's safetensors as stored (``config.json``'s dtype, else the compute dtype)."""
    stored = DTYPE_BYTES.get(s.shape.stored_dtype or "", s.bytes)
    return s.params * stored


# -- the reference pass and export --------------------------------------------------------------------------------


def reference_batch(job: PlanJob) -> MicroBatch:
    """A reference-pass batch: pairs packed as ``[prompt, chosen, rejected]`` up to ``tokensPerBatch`` padded
    tokens (default batchSize x maxLength); a pair longer than the budget runs alone."""
    seq = 2 * job.max_length
    budget = job.reference_tokens or job.reference_batch * job.max_length
    rows = max(budget // seq, 1)
    return MicroBatch(rows, seq, rows * seq, masked=terms.attention_kernel(job) != "flex_attention", packed=True)


def reference_device(s: Setup, zero3: bool = False) -> DevicePlan:
    """Inference: the weights, one layer's live tensors at a time (no autograd), the mask and its per-layer copy,
    the chunked LM head. ``zero3``: the weights partitioned over the pod's processes, each holding its slice and one
    module's gathered weights at a time (at most the embedding's or the LM head's)."""
    mb, sh, b = reference_batch(s.job), s.shape, s.bytes
    weights = s.params * b
    if zero3:
        weights = -(-weights // s.job.processes_per_node) + sh.vocab * sh.hidden * b
    live = b * (3 * sh.hidden + 2 * sh.q_width + 2 * sh.kv_width) + 3 * b * sh.intermediate
    head = mb.scored * sh.hidden * b + terms.head_tiles(s, mb.scored, terms.TILE_COPIES_FORWARD)
    square = mb.rows * mb.seq * mb.seq
    plan = _moment(
        "forward",
        weights=weights,
        activations=mb.tokens * live,
        logits=head,
        packedSequences=square * (1 + b) if mb.masked else 0,
    )
    return _with_overhead(plan, s.job.gpu)


def reference_host(s: Setup, device: DevicePlan, zero3: bool = False) -> int:
    """A precompute pod: each process loads its copy of the model on the CPU (on a CPU-only node, runs there); under
    ZeRO-3 the processes hold the weights between them as they load, a slice each."""
    procs = s.job.processes_per_node
    baseline = PROCESS_BASELINE_GPU if s.job.gpu else PROCESS_BASELINE_CPU
    if zero3:
        return procs * baseline + s.params * s.bytes
    return procs * (baseline + (s.params * s.bytes if s.job.gpu else device.total))


def sharding(choice: str, gpu: bool, processes: int, fits_one_device: bool | None) -> str:
    """How the precompute pods hold the reference model: ``reference.sharding`` when it names a mode; ``auto`` is
    zero3 on GPUs when the pod has several processes to partition it over and the model, copied whole, does not
    fit one device (``fits_one_device`` False), else replicated (on CPUs, or when the device's memory is not
    known: None)."""
    if choice in ("replicated", "zero3"):
        return choice
    return "zero3" if gpu and processes > 1 and fits_one_device is False else "replicated"


def reference_sharding(s: Setup) -> str:
    """:func:`sharding` of the job, judged against ``resources.gpuMemory`` (the device's memory, in a pod)."""
    memory = s.job.gpu_memory
    fits = None if memory is None else reference_device(s).total <= memory
    return sharding(s.job.reference_sharding, s.job.gpu, s.job.processes_per_node, fits)


def export_host(s: Setup) -> int:
    """Merging LoRA on the CPU streams a tensor at a time: the baseline and :data:`STREAMED_MERGE`; for a family in
    :data:`CONVERTED_CHECKPOINTS`, peft's merge: the base weights in the job's dtype, the adapter, and one safetensors
    shard's bytes while it is written. Without a merge, export copies files (full weights re-cut by blocks of bytes)
    and needs only the baseline."""
    baseline = PROCESS_BASELINE_CPU
    if not (s.lora and s.job.merge):
        return baseline
    if s.shape.model_type not in CONVERTED_CHECKPOINTS:
        return baseline + STREAMED_MERGE
    weights = s.params * s.bytes
    return baseline + weights + s.trainable * 4 + min(weights, MAX_SHARD)


def export_disk(s: Setup) -> int:
    """The model download, the trained weights or adapter, and the exported copy written before its upload."""
    trained = s.trainable * (s.adapter_bytes if s.lora else s.bytes)
    return model_files(s) + trained + s.params * s.bytes + SCRATCH


def precompute_device(s: Setup) -> DevicePlan:
    """A precompute process's device, the model held as :func:`reference_sharding` says."""
    return reference_device(s, reference_sharding(s) == "zero3")


def phase_plans(s: Setup, reward: ModelShape | None) -> tuple[PhasePlan, ...]:
    job = s.job
    procs, gpus = job.processes_per_node, job.gpus_per_node
    out = []
    if job.precompute and job.family in ("dpo", "kto"):
        zero3 = reference_sharding(s) == "zero3"
        ref = precompute_device(s)
        out.append(PhasePlan("precompute", job.reference_workers, procs, gpus, ref, reference_host(s, ref, zero3),
                             model_files(s) + DATASET_ALLOWANCE + SCRATCH, _cores(job, procs)))  # fmt: skip
    train = training_device(s, reward)
    out.append(PhasePlan("train", job.nodes, procs, gpus, train, training_host(s, train), training_disk(s),
                         _cores(job, procs)))  # fmt: skip
    out.append(PhasePlan("export", 1, 1, min(gpus, 1), None, export_host(s), export_disk(s), _cores(job, 1)))
    return tuple(out)


def _cores(job: PlanJob, processes: int) -> int:
    """The CPU request of a pod, in millicores: a core per process on GPU nodes, half a core on CPU-only ones."""
    return processes * (1000 if job.gpu else 500)
