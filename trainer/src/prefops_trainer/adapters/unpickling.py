"""The one way the trainer unpickles a checkpoint file: torch's weights-only unpickler, which builds tensors and plain
containers and nothing else, plus :data:`ALLOWED`, the few other types a checkpoint holds, and :func:`enum_member`
in place of ``getattr``.

DeepSpeed 0.19 loads its checkpoint files with ``torch.load(..., weights_only=False)``, the full unpickler, which runs
whatever code a file names. The completion marker that vouches for a checkpoint lives beside it under the job's
prefix, so whoever can write that prefix can forge a file and its marker together (docs/operator.md, Security). Two
guards, neither of which edits the library:

- :func:`refuse_unsafe` loads every pickle of a fetched checkpoint with the weights-only unpickler before training
  starts, and refuses the checkpoint (:class:`IntegrityError`, exit 2) naming the first file that holds anything
  else; nothing of it has been executed then.
- :func:`weights_only` surrounds ``trainer.train()``: within it ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` makes every
  ``torch.load`` of the process weights-only, DeepSpeed's ``weights_only=False`` included, with the same allowlist.

:data:`ALLOWED` is what real checkpoints hold (tests/trainer/test_checkpoint_unpickling.py loads 2-rank ZeRO-2 and
ZeRO-3 checkpoints, LoRA and full, and a checkpoint without DeepSpeed: every file loads, and every row is needed by
one of them). An Enum member is pickled by value, ``ZeroStageEnum(2)``, by some Pythons (3.11.7, the tests'), and
by name, ``getattr(ZeroStageEnum, 'gradients')``, by others: early 3.11 releases, Debian bookworm's 3.11.2 among
them, which the trainer image runs. ``getattr`` itself is never allowed: :func:`enum_member` answers to its name, for
the members of the Enum classes of :data:`ALLOWED` alone.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import IntegrityError

#: ``(module, name, where it is found)`` of every non-tensor type a checkpoint may hold.
ALLOWED: tuple[tuple[str, str, str], ...] = (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler", "ZeRO optimizer states: the loss scaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler", "the same, under float16 (GPUs only)"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum", "ZeRO optimizer states: the stage"),
    ("deepspeed.utils.tensor_fragment", "fragment_address", "ZeRO-2 optimizer states: parameter slices"),
    ("numpy", "ndarray", "the Trainer's rng_state*.pth: numpy's generator state"),
    ("numpy", "dtype", "the same"),
    ("numpy.dtypes", "UInt32DType", "the same"),
    ("numpy._core.multiarray", "_reconstruct", "the same"),
)
#: The name a pickle gives ``getattr``; :func:`enum_member` stands in for it.
GETATTR = "builtins.getattr"
#: Files a resume unpickles: DeepSpeed's ``global_step<n>/*.pt``, the Trainer's ``rng_state*.pth``, ``scheduler.pt``
#: (``optimizer.pt``, ``scaler.pt`` without DeepSpeed). ``training_args.bin`` is a pickle too, but nothing loads it.
LOADED_SUFFIXES = (".pt", ".pth")
FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_UNSAFE_NAME = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


def allowed() -> list[Any]:
    """The objects of :data:`ALLOWED`, imported."""
    return [getattr(importlib.import_module(module), name) for module, name, _ in ALLOWED]


def enum_member(owner: object, name: object) -> enum.Enum:
    """``getattr(owner, name)`` as a pickle of an Enum member calls it, answered only where ``owner`` is an Enum class
    of :data:`ALLOWED` and ``name`` one of its members: anything else is refused, nothing is looked up."""
    enums = _enums()
    found = next((t for t in enums if owner is t), None)
    if found is None:
        names = [t.__name__ for t in enums]
        raise pickle.UnpicklingError(f"getattr of {owner!r}: only members of {names} may be named")
    if not isinstance(name, str) or name not in found.__members__:
        raise pickle.UnpicklingError(f"getattr({found.__name__}, {name!r}): not a member of {found.__name__}")
    return found.__members__[name]


def _enums() -> list[type[enum.Enum]]:
    """The Enum classes of :data:`ALLOWED`."""
    return [t for t in allowed() if isinstance(t, type) and issubclass(t, enum.Enum)]


def safe_globals() -> list[Any]:
    """What the weights-only unpickler may name besides tensors: :data:`ALLOWED` and :func:`enum_member` as
    ``getattr``."""
    return [*allowed(), (enum_member, GETATTR)]


@contextlib.contextmanager
def weights_only() -> Iterator[None]:
    """Within: every ``torch.load`` of this process uses the weights-only unpickler (whatever its caller asks for),
    allowing :func:`safe_globals` besides tensors."""
    import torch

    saved = {k: os.environ.get(k) for k in (FORCE, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # both set is an error in torch
    os.environ[FORCE] = "1"
    try:
        with torch.serialization.safe_globals(safe_globals()):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def loaded_files(folder: Path) -> list[Path]:
    """The files of checkpoint ``folder`` a resume unpickles, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in LOADED_SUFFIXES)


def load(path: Path) -> Any:
    """``path`` loaded by the weights-only unpickler with :func:`safe_globals` (tensors memory-mapped, not read)."""
    import torch

    with torch.serialization.safe_globals(safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))


def refuse_unsafe(folder: Path, where: str) -> None:
    """Load every file a resume unpickles with :func:`load`; :class:`IntegrityError` naming ``where/<file>`` at the
    first that holds more than tensors, :data:`ALLOWED` and members of its Enums."""
    for path in loaded_files(folder):
        rel = path.relative_to(folder).as_posix()
        try:
            load(path)
        except Exception as e:
            raise IntegrityError(_refusal(f"{where}/{rel}", where, e)) from e


def _is_zip(path: Path) -> bool:
    """Whether ``path`` is in torch's zip format (only that can be memory-mapped)."""
    with path.open("rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _refusal(file: str, where: str, error: Exception) -> str:
    found = _UNSAFE_NAME.search(str(error))
    why = f"the weights-only unpickler refused it: {found.group(1)}" if found else f"{type(error).__name__}: {error}"
    return (
        f"{file}: not loaded: a checkpoint file may hold tensors and the few types DeepSpeed and the Trainer store, "
        f"and this one does not load as such ({why:.300}). Nothing of {where} was unpickled. Whoever wrote it can "
        f"write to this bucket (see docs/operator.md, Security); remove {where} to resume from an earlier checkpoint "
        "(or from the start)"
    )
