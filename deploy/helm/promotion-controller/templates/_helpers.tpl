{{/*
Only a small subset of Helm's template language is used in this chart, so the
test in crates/controller/tests/deploy.rs can render it without the helm binary
(which this project cannot install): .Values, .Release.Name/.Namespace/.Service,
.Chart.Name/.Version/.AppVersion, if/else/with/range (over lists only), define
and include, and the functions toYaml, nindent, indent, quote, default,
sha256sum and printf. Keep to it, or extend the test's renderer first.
*/}}

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
