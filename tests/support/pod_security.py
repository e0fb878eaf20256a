"""The Kubernetes Pod Security Standards' ``restricted`` profile (which Pod Security Admission enforces with the
namespace label ``pod-security.kubernetes.io/enforce: restricted``), as checks on a pod manifest: the baseline
controls plus the restricted ones, as https://kubernetes.io/docs/concepts/security/pod-security-standards/ lists
them for policy version v1.25+. ``restricted_violations(pod)`` names every control a pod breaks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}  # fmt: skip
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range"}  # fmt: skip


def _containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    spec = pod["spec"]
    ctx = spec.get("securityContext") or {}
    found = [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    found += [
        f"volume {v['name']}: type not allowed"
        for v in spec.get("volumes") or []
        if not (set(v) - {"name"}) <= ALLOWED_VOLUMES
    ]
    found += [f"sysctl {s['name']}" for s in ctx.get("sysctls") or [] if s["name"] not in SAFE_SYSCTLS]
    if ctx.get("runAsUser") == 0:
        found.append("spec.securityContext.runAsUser: 0")
    for c in _containers(spec):
        found += _container_violations(c, ctx)
    return found


def _container_violations(c: dict[str, Any], pod_ctx: dict[str, Any]) -> list[str]:
    ctx = c.get("securityContext") or {}
    name = c["name"]
    found = []
    if ctx.get("privileged"):
        found.append(f"{name}: privileged")
    if ctx.get("allowPrivilegeEscalation") is not False:
        found.append(f"{name}: allowPrivilegeEscalation must be false")
    if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
        found.append(f"{name}: runAsNonRoot must be true")
    if ctx.get("runAsUser") == 0:
        found.append(f"{name}: runAsUser 0")
    seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        found.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost, got {seccomp}")
    caps = ctx.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        found.append(f"{name}: capabilities must drop ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        found.append(f"{name}: capabilities may add only NET_BIND_SERVICE")
    if any(p.get("hostPort") for p in c.get("ports") or []):
        found.append(f"{name}: hostPort")
    if ctx.get("procMount", "Default") != "Default":
        found.append(f"{name}: procMount")
    return found
