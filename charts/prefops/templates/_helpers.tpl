{{/* Names, labels and the operator's RBAC rules, shared by the templates. */}}

{{/* The chart name, or nameOverride. */}}
{{- define "prefops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: fullnameOverride, else the release name when it contains the chart name, else
<release>-<chart>; at most 63 characters (a DNS label). */}}
{{- define "prefops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* name-version, the value of the helm.sh/chart label. */}}
{{- define "prefops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object carries; the operator's objects add app.kubernetes.io/component: operator. */}}
{{- define "prefops.labels" -}}
helm.sh/chart: {{ include "prefops.chart" . }}
app.kubernetes.io/name: {{ include "prefops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: prefops
{{- end }}

{{/* The labels of the operator's objects. */}}
{{- define "prefops.operatorLabels" -}}
{{ include "prefops.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The labels that select the operator pod (immutable in a Deployment: never change them). */}}
{{- define "prefops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prefops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "prefops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "prefops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: repository, then @digest or :tag (default: the chart's appVersion). */}}
{{- define "prefops.image" -}}
{{- $image := index . 0 }}{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The operator's permissions: exactly operator/rbac/operator.yaml's ClusterRole rules, the API calls of
operator/src/prefops_operator/adapters/kube.py and kopf's watches (tests/chart checks they are equal). The same
rules serve the ClusterRole (all namespaces) and each Role (watchNamespaces). */}}
{{- define "prefops.rules" -}}
# jobs: watched (kopf index and events), deleted after ttlSecondsAfterFinished; a sweep's trials are jobs the
# operator creates (dry-run first, to check them) and suspends or resumes (spec.suspend)
- apiGroups: [prefops.dev]
  resources: [preferencetrainingjobs]
  verbs: [list, watch, create, patch, delete]
# the status subresource: phase, conditions, progress, evaluation
- apiGroups: [prefops.dev]
  resources: [preferencetrainingjobs/status]
  verbs: [patch]
# sweeps: watched (kopf index and events); deleting one deletes its trials by garbage collection
- apiGroups: [prefops.dev]
  resources: [preferencetrainingsweeps]
  verbs: [list, watch]
# the sweep's status subresource: trials, best, counts, conditions
- apiGroups: [prefops.dev]
  resources: [preferencetrainingsweeps/status]
  verbs: [patch]
# the finalizers of jobs and sweeps, update only: not used as an API call, but the apiserver's
# OwnerReferencesPermissionEnforcement admission plugin asks it of whoever sets blockOwnerDeletion: true on an
# owner reference, as the operator does on every child (a job's pods, ConfigMap, Service and NetworkPolicy; a
# sweep's trial jobs) so that foreground deletion of the owner waits for them
- apiGroups: [prefops.dev]
  resources: [preferencetrainingjobs/finalizers, preferencetrainingsweeps/finalizers]
  verbs: [update]
# the phases' pods: watched (kopf index), created, deleted on restart/suspend/failure
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, create, delete]
# the trainer config (ConfigMap) and the training rendezvous (headless Service): created once per job; read
# when the name exists already (409), to check the job owns it (not a deleted job of the same name)
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [create, get]
# an Event on the job at every phase transition, on the sweep when a trial starts or ends
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.networkPolicy.enabled }}
# each job's NetworkPolicy (networkPolicy.enabled): created once per job, read when its name exists already
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, get]
{{- end }}
{{- end }}

{{- /* Read access to nodes: cluster-scoped, so in a ClusterRole whatever watchNamespaces says. */}}
{{- define "prefops.nodeRules" -}}
# nodes, read only (kopf index and events): a pod's node that stops reporting (Ready, the unreachable taint) or is
# cordoned (a drain) tells a lost node or a drain from a failure; cluster-scoped, so a ClusterRole even when the
# operator watches some namespaces only
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch]
{{- end }}

{{- /* What the operator needs to check who creates each sweep (sweepCreators.enabled): exactly
operator/rbac/sweep-creators/operator.yaml's rules (tests/chart checks they are equal). Cluster-scoped. */}}
{{- define "prefops.sweepCreatorRules" -}}
# whether a sweep's creator may create its trials' jobs (verb create, prefops.dev preferencetrainingjobs)
- apiGroups: [authorization.k8s.io]
  resources: [subjectaccessreviews]
  verbs: [create]
{{- end }}
