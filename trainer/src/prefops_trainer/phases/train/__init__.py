"""The train phase: TRL underneath, the reference log-probs read from the shared cache.

With precomputed log-probs the trainer never loads or runs a reference model: ``DPOTrainer`` is told the
log-probs are precomputed (so it keeps no reference model), and its own precompute pass is replaced by a
join with our cache on the row index. Runs as one process or as every rank under torchrun (DeepSpeed
ZeRO-2/3 from the spec); checkpoints go to ``storage.uri`` and a restart resumes from the newest.

``phase`` runs it; ``reference`` reads and checks the cache; ``trainers`` builds the TRL trainer; ``callbacks``
reports metrics and syncs checkpoints as it trains; ``distributed`` knows the ranks; ``summary`` condenses the
log history.
"""

from .phase import run

__all__ = ["run"]
