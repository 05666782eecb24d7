{{/* Names, truncated to 63 characters: the limit of a DNS label, which Service names must be. */}}
{{- define "turnout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "turnout.fullname" -}}
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

{{/* A component's name: the release's full name and a suffix, within the same 63 characters. */}}
{{- define "turnout.componentName" -}}
{{- printf "%s-%s" (include "turnout.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component }}
{{- end }}

{{- define "turnout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard labels (helm.sh/chart, app.kubernetes.io/*) on every object. */}}
{{- define "turnout.labels" -}}
helm.sh/chart: {{ include "turnout.chart" . }}
app.kubernetes.io/name: {{ include "turnout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: turnout
{{- end }}

{{/* What selects one component's pods; `component` is gateway, gpu-backend or endpoint-picker. */}}
{{- define "turnout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "turnout.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "turnout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "turnout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "turnout.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the API key(s): the user's own, or the one this chart makes. */}}
{{- define "turnout.apiKeysSecret" -}}
{{- default (include "turnout.componentName" (dict "root" . "component" "api-keys")) .Values.apiKeys.existingSecret }}
{{- end }}

{{/* The GPU backend's name clients use, and the id it serves under. */}}
{{- define "turnout.gpuModelName" -}}
{{- default (base .Values.gpuBackend.model) .Values.gpuBackend.servedModelName }}
{{- end }}

{{/* The GPU backend's OpenAI base URL, inside the cluster. */}}
{{- define "turnout.gpuBackendURL" -}}
{{- printf "http://%s:%d/v1" (include "turnout.componentName" (dict "root" . "component" "gpu")) (int .Values.gpuBackend.port) }}
{{- end }}

{{/*
The router config (turnout serve --config; format in server/config.py): `router` and `models` from the
values, plus, with gpuBackend.enabled, one openai-backend model that routes to the GPU backend's Service:
by default its replicas are the Service's pods, from DNS (replicas_from_dns; the Service is headless),
unless gpuBackend.route.replicas lists them.
*/}}
{{- define "turnout.routerConfig" -}}
{{- $models := .Values.models }}
{{- if .Values.gpuBackend.enabled }}
{{- $route := .Values.gpuBackend.route }}
{{- $options := mergeOverwrite (dict "url" (include "turnout.gpuBackendURL" .) "model" (include "turnout.gpuUpstreamModel" .)) (default (dict) $route.options) }}
{{- $gpu := dict "name" (include "turnout.gpuModelName" .) "backend" "openai" "options" $options }}
{{- if $route.replicas }}
{{- $_ := set $gpu "replicas" $route.replicas }}
{{- else }}
{{- $_ := set $gpu "replicas_from_dns" (dict "refresh_interval" $route.dnsRefreshSeconds) }}
{{- end }}
{{- with $route.aliases }}{{ $_ := set $gpu "aliases" . }}{{ end }}
{{- with $route.fallback }}{{ $_ := set $gpu "fallback" . }}{{ end }}
{{- $models = append $models $gpu }}
{{- end }}
{{- toYaml (dict "router" .Values.router "models" $models) }}
{{- end }}

{{/* The model the connection test asks for: tests.model, else the first one routed. */}}
{{- define "turnout.testModel" -}}
{{- if .Values.tests.model }}
{{- .Values.tests.model }}
{{- else if .Values.models }}
{{- (first .Values.models).name }}
{{- else }}
{{- include "turnout.gpuModelName" . }}
{{- end }}
{{- end }}

{{/*
Seconds a gateway pod gets to stop: the preStop pause (while endpoints stop sending it traffic), then the
drain (requests in flight finish, up to --drain-timeout), then a margin for the process to exit. Anything
less and the kubelet's SIGKILL would cut streams the drain promised to finish.
*/}}
{{- define "turnout.terminationGracePeriodSeconds" -}}
{{- add (int .Values.server.preStopSleepSeconds) (int .Values.server.drainTimeoutSeconds) (int .Values.server.terminationMarginSeconds) }}
{{- end }}

{{/* Where the endpoint picker listens for the gateway (ext-proc, gRPC). */}}
{{- define "turnout.endpointPickerName" -}}
{{- include "turnout.componentName" (dict "root" . "component" "epp") }}
{{- end }}

{{- define "turnout.inferencePoolName" -}}
{{- default (include "turnout.fullname" .) .Values.inferencePool.name }}
{{- end }}

{{/* The id the GPU server answers to: vllm serves it under --served-model-name; trtllm-serve under the
model argument itself. */}}
{{- define "turnout.gpuUpstreamModel" -}}
{{- if eq .Values.gpuBackend.engine "vllm" }}
{{- include "turnout.gpuModelName" . }}
{{- else }}
{{- .Values.gpuBackend.model }}
{{- end }}
{{- end }}

{{- define "turnout.gpuImage" -}}
{{- $default := dict "vllm" "vllm/vllm-openai" "trtllm" "nvcr.io/nvidia/tensorrt-llm/release" }}
{{- printf "%s:%s" (default (get $default .Values.gpuBackend.engine) .Values.gpuBackend.image.repository) .Values.gpuBackend.image.tag }}
{{- end }}
