"""The pure core: no kopf, no Kubernetes client, no network. Everything here is a function of its arguments."""
