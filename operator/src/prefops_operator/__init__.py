"""prefops operator: runs ``PreferenceTrainingJob`` resources as phases of pods (see docs/operator.md).

Layers: :mod:`.core` is pure (spec parsing, naming, manifests, the phase state machine); :mod:`.adapters` does
I/O (Kubernetes API, metrics scraping, the operator's own metrics); :mod:`.reconciler` joins them for one job;
:mod:`.runtime` queues work; :mod:`.handlers` is the kopf glue; ``python -m prefops_operator`` runs it.
"""

__version__ = "0.1.0"
