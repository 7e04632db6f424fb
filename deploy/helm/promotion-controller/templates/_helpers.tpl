{{/* The name of every object: the release name unless overridden. */}}
{{- define "promotion-controller.fullname" -}}
{{ default .Release.Name .Values.fullnameOverride }}
{{- end }}

{{- define "promotion-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "promotion-controller.labels" -}}
{{ include "promotion-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "promotion-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "promotion-controller.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end }}

{{/* The controller's rules on trackers, policies and their Events (deploy/README.md, RBAC). */}}
{{- define "promotion-controller.trackerRules" -}}
# Watched by the controller (list, watch); read, created and moved by the
# webhook receiver with server-side apply (get, patch; create, because an
# apply that creates the object is also authorized as a create).
- apiGroups: ["promotion.io"]
  resources: ["pullrequesttrackers"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Progress is saved with a PUT carrying the resourceVersion read (update);
# a reconcile error is shown with a merge patch of the conditions (patch).
- apiGroups: ["promotion.io"]
  resources: ["pullrequesttrackers/status"]
  verbs: ["update", "patch"]
# Policies are only watched ...
- apiGroups: ["promotion.io"]
  resources: ["promotionpolicies"]
  verbs: ["list", "watch"]
# ... and their Valid/Ready conditions written with a merge patch.
- apiGroups: ["promotion.io"]
  resources: ["promotionpolicies/status"]
  verbs: ["patch"]
# Events about trackers, each one created (never a series, so never patched).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* The controller's rules on Argo CD Applications. */}}
{{- define "promotion-controller.applicationRules" -}}
# Argo CD Applications are read (status, opt-in annotation) and promoted
# with one merge patch, never created. With watchApplications, those labelled
# promotion.io/watch=true are watched (list, watch) so a sync wakes the PRs
# waiting on it; the controller keeps a hash per app, not the objects.
- apiGroups: ["argoproj.io"]
  resources: ["applications"]
  verbs: ["get", "patch"{{ if .Values.watchApplications }}, "list", "watch"{{ end }}]
{{- end }}

{{/* The approvers' example ClusterRole: named after the release unless named. */}}
{{- define "promotion-controller.approverRoleName" -}}
{{ default (printf "%s-approver" (include "promotion-controller.fullname" .)) .Values.approval.approverRole.name }}
{{- end }}

{{/* "true" when a connection grants namespaces by their labels: the controller then watches Namespaces. */}}
{{- define "promotion-controller.watchesNamespaces" -}}
{{- range .Values.config.connections }}{{ if .namespaceSelector }}true{{ end }}{{ end }}
{{- end }}

{{- define "promotion-controller.namespaceRules" -}}
# Namespace labels, for connections granted by namespaceSelector: watched
# (list, watch) only when a connection uses one.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
