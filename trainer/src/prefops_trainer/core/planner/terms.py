"""The memory terms of one device, each a formula of the model's shape and the job's sizing fields. Pure.

Sources, per term (docs/planner.md gives each formula):

- model states: DeepSpeed's own estimators (``estimate_zero2_model_states_mem_needs``,
  ``estimate_zero3_model_states_mem_needs``; a test compares), torch AdamW (two states per trainable parameter, in its
  dtype), peft (LoRA adapters kept in float32 over 16-bit weights);
- activations: what autograd saves for backward in a ``transformers`` Llama-style decoder layer, counted tensor by
  tensor with ``torch.autograd.graph.saved_tensors_hooks`` (tests/trainer/test_planner_activations.py compares);
- the LM head: TRL 1.16's chunked log-prob kernel (through ``adapters.trl_bridge``): [4096, 32768] tiles, never the
  full logits, for DPO and KTO; CPO, ORPO and Online DPO materialize the logits in the model's dtype;
- prefix sharing: :mod:`prefops_trainer.compute.packing`'s 4D mask, which ``scaled_dot_product_attention`` converts
  to the compute dtype in every layer and keeps for backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from .job import DTYPE_BYTES, PlanJob
from .model import ModelShape

GIB = 2**30
#: TRL's chunked log-prob kernel: tokens and vocabulary entries per tile
TOKEN_TILE, VOCAB_TILE = 4096, 32768
#: float32 copies of a tile the kernel's torch fallback (no Triton: CPUs) holds at once, forward and backward (the
#: log-probs' gradient only), measured (tests/trainer/test_planner_terms.py)
TILE_COPIES_FORWARD, TILE_COPIES_BACKWARD = 3.4, 7.3
#: copies of the full [rows, seq, vocab] logits alive at once in CPO/ORPO/Online DPO (logits, log-softmax, grad)
FULL_LOGITS_COPIES = 3
#: DeepSpeed's allgather bucket (trainer's ZeRO-2 config: allgather_bucket_size 2e8 elements)
ALLGATHER_BUCKET = 200_000_000
#: NCCL's own buffers on a GPU of a multi-rank job (channels x peers x NCCL_BUFFSIZE, 4 MiB each)
NCCL_BUFFERS = 256 * 2**20
#: outside the caching allocator on a CUDA device: the context, cuBLAS and NCCL workspaces
CUDA_CONTEXT = 1 * GIB
#: the caching allocator's fragmentation over what it hands out (reserved / allocated at the peak)
FRAGMENTATION = 0.05


@dataclass(frozen=True)
class Setup:
    """The derived numbers every term reads: the job and model, the dtype's bytes, parameters, world size."""

    job: PlanJob
    shape: ModelShape
    bytes: int  # the model's dtype
    params: int
    trainable: int
    world: int

    @property
    def lora(self) -> bool:
        return self.job.lora is not None

    @property
    def adapter_bytes(self) -> int:
        """LoRA adapters: float32 (peft's autocast_adapter_dtype), except under DeepSpeed, which casts the whole
        model to its 16-bit dtype."""
        return self.bytes if self.job.zero_stage else 4

    @property
    def deepspeed(self) -> bool:
        return self.job.zero_stage is not None


def setup(job: PlanJob, shape: ModelShape) -> Setup:
    lora = job.lora
    trainable = shape.lora_params(lora.rank, lora.targets) if lora else shape.params
    return Setup(job, shape, DTYPE_BYTES[job.compute_dtype], shape.params, trainable, job.world_size)


@dataclass(frozen=True)
class MicroBatch:
    """The tensors one forward sees, at their worst (every row at ``maxLength``).

    ``rows`` x ``seq`` tokens run through the decoder; ``scored`` positions reach the LM head; ``masked``: the
    attention kernel gets an explicit 4D mask (packed pairs, or padded rows); ``packed``: prefix sharing's layout.
    ``full_logits``: positions whose logits are materialized (CPO, ORPO, Online DPO).
    """

    rows: int
    seq: int
    scored: int
    masked: bool
    packed: bool
    full_logits: int = 0

    @property
    def tokens(self) -> int:
        return self.rows * self.seq


def attention_kernel(job: PlanJob) -> str:
    """``auto`` as the trainer resolves it in the shipped image (no flash-attn): sdpa."""
    return "sdpa" if job.attn == "auto" else job.attn


def training_batch(job: PlanJob) -> MicroBatch:
    """One training micro-batch. DPO with prefix sharing: B rows ``[prompt, chosen, rejected]`` of up to
    ``2 x maxLength`` (keep_start truncation: prompt + each completion fit ``maxLength``); TRL's layout: 2B rows of
    ``maxLength``; KTO: B rows; Online DPO: two completions per prompt."""
    b, n, kernel = job.batch, job.max_length, attention_kernel(job)
    packed = (
        job.family == "dpo" and job.prefix_sharing and job.keep_start and kernel in ("sdpa", "eager", "flex_attention")
    )
    if packed:
        return MicroBatch(b, 2 * n, 2 * b * n, masked=kernel != "flex_attention", packed=True)
    rows = b if job.family == "kto" else 2 * b
    masked = kernel != "flash_attention_2"  # padded rows: an explicit mask; flash-attention 2 unpads instead
    full = rows * n if job.family in ("cpo", "orpo", "online-dpo") else 0
    scored = 0 if full else rows * n
    return MicroBatch(rows, n, scored, masked=masked, packed=False, full_logits=full)


# -- model states --------------------------------------------------------------------------------------------------


def weights(s: Setup) -> int:
    """The model's weights on the device: all of them, in its dtype; ZeRO-3 partitions them over every rank, and
    with ``offload: cpu`` keeps them on the host (gathering a module at a time: communication)."""
    total = s.params * s.bytes
    if s.job.zero_stage != 3:
        return total
    return 0 if s.job.offload else -(-total // s.world)


def trainable_extra(s: Setup) -> int:
    """Trainable parameters beyond the weights: LoRA adapters; DeepSpeed's float32 master copy (partitioned)."""
    adapters = s.trainable * s.adapter_bytes if s.lora else 0
    master = _part(s, 4 * s.trainable) if s.deepspeed else 0
    return adapters + master


def gradients(s: Setup, at_step: bool) -> int:
    """Gradients of the trainable parameters. Without DeepSpeed in the parameters' dtype (float32 adapters). ZeRO-2
    keeps a 16-bit partition and builds a float32 one for the optimizer step; ZeRO-3 reduces straight into a
    float32 partition it keeps (DeepSpeed's estimators count the same)."""
    if not s.deepspeed:
        return s.trainable * (s.adapter_bytes if s.lora else s.bytes)
    if s.job.zero_stage == 3:
        return _part(s, 4 * s.trainable)
    return _part(s, s.trainable * s.bytes) + (_part(s, 4 * s.trainable) if at_step else 0)


def optimizer_states(s: Setup) -> int:
    """AdamW's two moments: in the parameters' dtype (float32 adapters) without DeepSpeed, float32 and
    partitioned with it (moved to the host by ``offload: cpu``)."""
    if s.deepspeed:
        return 0 if s.job.offload else _part(s, 8 * s.trainable)
    return 2 * s.trainable * (s.adapter_bytes if s.lora else s.bytes)


def _part(s: Setup, total: int) -> int:
    """``total`` partitioned over every rank (ZeRO), or nothing on the device when offloaded to the host."""
    return 0 if s.job.offload else -(-total // s.world)


def communication(s: Setup) -> int:
    """Buffers the ranks talk through: DeepSpeed's reduce buckets (``auto``: hidden^2 elements, two with
    overlap_comm) and ZeRO-2's allgather bucket, or ZeRO-3's gathered modules (DeepSpeed's estimate: four bytes per
    parameter of the largest module) and prefetch bucket; DDP's gradient buckets; NCCL's own buffers."""
    if s.world == 1 and not s.deepspeed:
        return 0
    h2 = s.shape.hidden**2
    nccl = NCCL_BUFFERS if s.job.gpu and s.world > 1 else 0
    if s.job.zero_stage == 2:
        return 2 * h2 * s.bytes + min(ALLGATHER_BUCKET, s.params) * s.bytes + nccl
    if s.job.zero_stage == 3:
        return 4 * s.shape.largest_module_params + 2 * h2 * s.bytes + int(0.9 * h2) * s.bytes + nccl
    return gradients(s, at_step=False) + nccl  # DDP: a bucket per gradient


# -- activations -----------------------------------------------------------------------------------------------


def _adapted_groups(s: Setup) -> set[str]:
    """Which inputs of a layer feed an adapted linear: ``norm1`` (q, k, v), ``attn`` (o), ``norm2`` (gate, up),
    ``mlp`` (down)."""
    lora = s.job.lora
    if lora is None:
        return set()
    every = lora.targets == ("all-linear",)
    return {_GROUP.get(lin.name, "norm2") for lin in s.shape.linears() if every or lin.name in lora.targets}


_GROUP = {"q_proj": "norm1", "k_proj": "norm1", "v_proj": "norm1", "qkv_proj": "norm1", "c_attn": "norm1",
          "o_proj": "attn", "down_proj": "mlp", "w2": "mlp", "c_proj": "mlp"}  # fmt: skip


def layer_activations(s: Setup, mb: MicroBatch) -> int:
    """Bytes one decoder layer saves for backward per token (``transformers``' Llama layer, counted tensor by
    tensor): the two RMSNorms (a float32 copy of their input, and their outputs where a trained weight reads them),
    attention (rotated q and k, v, the output, float32 log-sum-exp per head), the SwiGLU MLP, LoRA's rank-r
    outputs; with an explicit mask, k and v repeated to every head and (padded rows) the kernel's copy of the
    mask in the compute dtype."""
    sh, b, full = s.shape, s.bytes, not s.lora
    h, f, q, kv, heads = sh.hidden, sh.intermediate, sh.q_width, sh.kv_width, sh.heads
    # an input is saved when a trained weight reads it: the base layer's (full fine-tuning), or an adapter's. An
    # adapter in the weights' dtype reads the very tensor; a float32 adapter over 16-bit weights (under autocast) gets
    # a copy of its input cast for it, one per adapter (counted with the adapters)
    groups = set() if _cast_adapters(s) else _adapted_groups(s)
    norms = sum(4 * h + (b * h if full else 0) + (b * h if full or g in groups else 0) for g in ("norm1", "norm2"))
    attn = b * (2 * q + 2 * kv) + 4 * heads
    kernel = attention_kernel(s.job)
    if kernel == "eager":  # q, k and v repeated to every head, the float32 softmax (and its 16-bit cast); the
        # output only where a trained weight reads it (fused kernels keep theirs for backward)
        out = b * q if full or "attn" in groups else 0
        attn = 3 * b * q + out + 4 * heads * mb.seq + (b * heads * mb.seq if b != 4 else 0)
    elif mb.masked and kernel != "flex_attention":
        attn += 2 * b * (q - kv) + (0 if mb.packed else b * mb.seq)  # packed: the mask's copies are its own term
    mlp_tensors = (3 if sh.family.gated else 2) + (1 if full or "mlp" in groups else 0)
    mlp = mlp_tensors * b * f * max(sh.experts_per_token, 1)
    return norms + attn + mlp + _lora_activations(s) + 8


def _cast_adapters(s: Setup) -> bool:
    """float32 adapters over 16-bit weights (peft's autocast_adapter_dtype, without DeepSpeed's cast)."""
    return s.lora and s.adapter_bytes != s.bytes


def _lora_activations(s: Setup) -> int:
    """Per token: each adapter's rank-r output, in the compute dtype, and its own copy of its input when cast."""
    lora = s.job.lora
    if lora is None:
        return 0
    every = lora.targets == ("all-linear",)
    cast = _cast_adapters(s)
    return sum(s.bytes * (lora.rank + (lin.fan_in if cast else 0)) * lin.count
               for lin in s.shape.linears() if every or lin.name in lora.targets)  # fmt: skip


def saved_activations(s: Setup, mb: MicroBatch) -> int:
    """Saved for backward over the micro-batch when the forward ends: every layer's, or with gradient checkpointing
    only each layer's input; and the final norm's."""
    h, b = s.shape.hidden, s.bytes
    final = 4 * h + (0 if s.lora else b * h) + 12
    per_layer = b * h if s.job.checkpointing else layer_activations(s, mb)
    return mb.tokens * (s.shape.layers * per_layer + final) + adapter_casts(s)


def adapter_casts(s: Setup) -> int:
    """Autocast's 16-bit copies of float32 adapters, kept for backward: one of each per step."""
    return s.trainable * s.bytes if _cast_adapters(s) else 0


def backward_extra(s: Setup, mb: MicroBatch) -> int:
    """What a decoder layer's backward adds on top of the saved activations: gradients in flight (the residual
    stream's, in and out, and the MLP's intermediates) and, with gradient checkpointing, the layer's activations
    recomputed."""
    in_flight = mb.tokens * s.bytes * (2 * s.shape.hidden + 2 * s.shape.intermediate)
    recomputed = mb.tokens * layer_activations(s, mb) if s.job.checkpointing else 0
    return in_flight + recomputed


# -- the LM head -------------------------------------------------------------------------------------------------


def logits(s: Setup, mb: MicroBatch) -> int:
    """The LM head at its peak, the start of backward. TRL's chunked kernel keeps the scored hidden states and
    per-token statistics, and computes [4096, 32768] tiles into one buffer in the compute dtype (allocated at the
    full 32768 width whatever the vocabulary); without Triton (CPUs) its torch fallback adds float32 temporaries of
    the tile. Backward adds float32 gradients of the hidden states, and of the head's weight when it is trained.
    CPO, ORPO and Online DPO materialize the logits: ``FULL_LOGITS_COPIES`` x positions x vocabulary, model dtype."""
    sh, b = s.shape, s.bytes
    if mb.full_logits:
        return FULL_LOGITS_COPIES * mb.full_logits * sh.vocab * b
    n = mb.scored
    head = sh.vocab * sh.hidden * (4 + s.bytes) if not s.lora else 0
    backward = n * sh.hidden * 4 + head_tiles(s, n, TILE_COPIES_BACKWARD) + head
    saved = n * sh.hidden * b + 8 * n
    return saved + max(head_tiles(s, n, TILE_COPIES_FORWARD), backward)


def head_tiles(s: Setup, n: int, copies: float) -> int:
    """The chunked kernel's working set over ``n`` positions: its buffer, and on CPUs ``copies`` float32 tiles."""
    rows = min(n, TOKEN_TILE)
    buffer, tile = rows * VOCAB_TILE * s.bytes, rows * min(s.shape.vocab, VOCAB_TILE)
    return buffer + (0 if s.job.gpu else int(copies * tile * 4))


def packed_sequences(s: Setup, mb: MicroBatch) -> int:
    """Prefix sharing's layout: its [rows, 1, T, T] mask (boolean for sdpa, which converts it to the compute dtype
    in every layer and keeps that copy for backward: one layer's with gradient checkpointing; additive in the compute
    dtype for eager; a block mask for flex attention), the layout and index tensors, and the per-token fields laid
    back out as TRL's [2B, maxLength]."""
    if not mb.packed:
        return 0
    square = mb.rows * mb.seq * mb.seq
    kernel = attention_kernel(s.job)
    if kernel == "sdpa":
        mask = square + (1 if s.job.checkpointing else s.shape.layers) * square * s.bytes
    elif kernel == "eager":
        mask = square * s.bytes
    else:
        mask = mb.rows * (mb.seq // 128 + 1) ** 2 * 8
    index = 8 * (4 * mb.tokens + 6 * mb.scored) + 4 * 3 * 2 * s.job.batch * s.job.max_length
    return mask + index
