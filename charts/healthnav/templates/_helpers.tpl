{{/* Names and labels shared by every template. */}}

{{- define "healthnav.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "healthnav.fullname" -}}
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

{{- define "healthnav.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "healthnav.selectorLabels" -}}
app.kubernetes.io/name: {{ include "healthnav.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "healthnav.labels" -}}
helm.sh/chart: {{ include "healthnav.chart" . }}
{{ include "healthnav.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: healthnav
{{- end }}

{{- define "healthnav.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "healthnav.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "healthnav.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "healthnav.peeringName" -}}
{{- default (include "healthnav.fullname" .) .Values.operator.peering.name }}
{{- end }}

{{/* "true" when the operator watches every namespace (kopf --all-namespaces). */}}
{{- define "healthnav.clusterwide" -}}
{{- if not .Values.watchNamespaces }}true{{- end }}
{{- end }}

{{/* Fail early, with the key's name, on combinations the schema cannot express. */}}
{{- define "healthnav.validate" -}}
{{- if and (eq .Values.rbac.scope "namespace") (not .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespace needs watchNamespaces (the namespaces the operator may act in)" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.operator.peering.enabled) }}
{{- fail "replicaCount > 1 needs operator.peering.enabled=true: replicas without peering would reconcile the same objects concurrently" }}
{{- end }}
{{- if and .Values.trainer.serviceAccount.create (not .Values.watchNamespaces) }}
{{- fail "trainer.serviceAccount.create needs watchNamespaces (the namespaces to create it in)" }}
{{- end }}
{{- if and .Values.serving.serviceAccount.create (not .Values.watchNamespaces) }}
{{- fail "serving.serviceAccount.create needs watchNamespaces (the namespaces to create it in)" }}
{{- end }}
{{- end }}

{{/*
Rules on namespaced resources: exactly the API calls the operator makes (see
operator/finetunejob_handlers.py, finetunejob_controller.py, kube.py). Argument: a dict with
"root" (the chart context) and "namespacedPeering" (bool).
*/}}
{{- define "healthnav.namespacedRules" -}}
{{- $root := .root }}
# FineTuneJobs: watched (kopf), re-read before each reconcile; status written by the controller.
- apiGroups: [healthnav.io]
  resources: [finetunejobs]
  verbs: [get, list, watch]
- apiGroups: [healthnav.io]
  resources: [finetunejobs/status]
  verbs: [patch]
# Training Jobs: indexed by label (list/watch), created, read back after AlreadyExists,
# patched to suspend/resume.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
# Training pods: indexed by label for phase and termination messages; never modified.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Trainer config and progress ConfigMaps. patch/update are held only because the trainer's
# per-job Role grants them on its progress ConfigMap, and Kubernetes lets a subject create a
# Role only with permissions it holds itself (RBAC escalation prevention).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, update]
# Per-job trainer identity and its progress-only Role + RoleBinding.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create]
# kubectl describe shows what the operator did.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if $root.Values.rbac.modelServe }}
# ModelServe: watched, status written; each becomes a KubeRay RayService.
- apiGroups: [healthnav.io]
  resources: [modelserves]
  verbs: [get, list, watch]
- apiGroups: [healthnav.io]
  resources: [modelserves/status]
  verbs: [patch]
- apiGroups: [ray.io]
  resources: [rayservices]
  verbs: [get, list, watch, create, patch]
{{- end }}
{{- if .namespacedPeering }}
# kopf peering (active/standby replicas) in each watched namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/* Objects placed in a watched namespace named "default" (the kind quickstart's examples). */}}
{{- define "healthnav.defaultNamespaceAnnotations" -}}
{{- if eq . "default" }}
annotations:
  checkov.io/skip1: CKV_K8S_21=Created in a namespace the user chose to watch (watchNamespaces); the kind quickstart's examples live in default.
{{- end }}
{{- end }}
