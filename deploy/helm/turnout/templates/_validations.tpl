{{/*
What values.schema.json cannot say, checked at render: it relates fields to each other. Included by
configmap.yaml, so every install, upgrade and `helm template` runs it.
*/}}
{{- define "turnout.validate" -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) is above autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) }}
{{- end }}
{{- $names := list }}
{{- range .Values.models }}
{{- $names = concat $names (list .name) (default (list) .aliases) }}
{{- end }}
{{- if .Values.gpuBackend.enabled }}
{{- $gpu := include "turnout.gpuModelName" . }}
{{- if has $gpu $names }}
{{- fail (printf "gpuBackend serves %q, a name models already uses: set gpuBackend.servedModelName" $gpu) }}
{{- end }}
{{- $names = concat $names (list $gpu) (default (list) .Values.gpuBackend.route.aliases) }}
{{- end }}
{{- range .Values.models }}
{{- $model := .name }}
{{- range (default (list) .fallback) }}
{{- if not (has . $names) }}
{{- fail (printf "models[%s].fallback names %q, which is not a model here" $model .) }}
{{- end }}
{{- end }}
{{- end }}
{{- range (default (list) .Values.gpuBackend.route.fallback) }}
{{- if not (has . $names) }}
{{- fail (printf "gpuBackend.route.fallback names %q, which is not a model here" .) }}
{{- end }}
{{- end }}
{{- end }}
