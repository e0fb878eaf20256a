"""prefops operator: runs ``PreferenceTrainingJob`` resources as phases of pods (see docs/operator.md).

Layers: :mod:`.core` is pure (spec parsing, what each phase is, naming, manifests, the phase state machine);
:mod:`.adapters` does I/O (Kubernetes API, metrics scraping, the operator's own metrics) and :mod:`.config` reads
the flags; :mod:`.reconciler` joins them for one job (:mod:`.sweep_reconciler` for one sweep); :mod:`.runtime`
queues work, one :class:`~.runtime.Runtime` a controller; :mod:`.handlers` and :mod:`.sweep_handlers` are the kopf
glue; ``python -m prefops_operator`` registers both controllers and runs them.
"""

__version__ = "0.1.0"
