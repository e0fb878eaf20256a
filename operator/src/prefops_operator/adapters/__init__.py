"""I/O adapters: the Kubernetes API (:mod:`.kube`), trainer metrics scraping (:mod:`.scrape`) and the operator's
own Prometheus metrics (:mod:`.metrics`)."""
