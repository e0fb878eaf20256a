"""The rules both distributions apply and must apply alike: a sweep's expansion, its trials' job specs and names,
the checks before its first trial and its ranking (:mod:`.sweep_spec`, :mod:`.trials`); the checks of a job spec
that the CRD schema cannot express (:mod:`.checks`); each algorithm's rule (:mod:`.algorithms`); the 63-character
naming rule (:mod:`.names`); the URI schemes and what each may hold (:mod:`.schemes`).

Pure and stdlib-only, with relative imports only. The source of truth lives in the trainer
(``prefops_trainer.core.rules``); ``scripts/gen_shared_copies.py`` copies it into the operator
(``prefops_operator.core.rules``) and a test checks the copy. Each side adapts its own parsed job to
:class:`.checks.JobFacts` and turns :class:`.errors.InvalidSpec` into its own error where they differ.
"""
