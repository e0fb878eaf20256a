"""The pure core: the job spec, the algorithm table, TRL config mapping, cache keys and the workspace layout.
No torch, TRL, storage or network imports (import-linter checks it)."""
