{{/* Chart name (app.kubernetes.io/name). */}}
{{- define "node-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of every object: the release name if it contains the chart name. */}}
{{- define "node-agent.fullname" -}}
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

{{/* Helm's standard labels; the kustomize manifests carry only name (and component). */}}
{{- define "node-agent.standardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "node-agent.labels" -}}
app.kubernetes.io/name: {{ include "node-agent.name" . }}
{{ include "node-agent.standardLabels" . }}
{{- end }}

{{/* Selector of the agent's pods (DaemonSet, Service, NetworkPolicy, ServiceMonitor). */}}
{{- define "node-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "node-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{/* Labels of the objects that are the agent (DaemonSet, pods, Service). */}}
{{- define "node-agent.agentLabels" -}}
{{ include "node-agent.labels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "node-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "node-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "node-agent.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the Secret behind sinkSecrets.<name>. */}}
{{- define "node-agent.sinkSecretName" -}}
{{- if .secret.existingSecret }}
{{- .secret.existingSecret }}
{{- else }}
{{- printf "%s-%s" (include "node-agent.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
