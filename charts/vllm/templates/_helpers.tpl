{{/* Chart name, truncated to 63 characters: Kubernetes names and label values stop there. */}}
{{- define "vllm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name when it already holds the chart name, else release-chart.
Truncated to 63 characters (DNS-1123 label limit) without a trailing dash.
*/}}
{{- define "vllm.fullname" -}}
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

{{- define "vllm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Service name: the router's backend host. */}}
{{- define "vllm.serviceName" -}}
{{- default (include "vllm.fullname" .) .Values.service.name }}
{{- end }}

{{/* Labels on every object's metadata. */}}
{{- define "vllm.labels" -}}
helm.sh/chart: {{ include "vllm.chart" . }}
{{ include "vllm.selectorLabels" . }}
app.kubernetes.io/version: {{ include "vllm.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: serving-engine
app.kubernetes.io/part-of: vllm-gate
vllm-gate/engine: {{ .Values.engine }}
{{- end }}

{{/* Selector labels: only name + instance, because selectors are immutable. */}}
{{- define "vllm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vllm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vllm.imageTag" -}}
{{- if eq .Values.engine "sim" }}{{ .Values.sim.image.tag }}{{ else }}{{ .Values.image.tag }}{{ end }}
{{- end }}

{{/* The container image, pinned by tag and, when given, by digest. */}}
{{- define "vllm.image" -}}
{{- if eq .Values.engine "sim" }}
{{- printf "%s:%s" .Values.sim.image.repository .Values.sim.image.tag }}
{{- else if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository .Values.image.tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}
{{- end }}

{{/*
Container args. vLLM takes engine settings only as CLI arguments (it reads no
VLLM_TENSOR_PARALLEL_SIZE or VLLM_GPU_MEMORY_UTILIZATION). The simulator rejects flags it does
not know (--gpu-memory-utilization, --host, ...), so engine: sim gets only the ones it accepts.
*/}}
{{- define "vllm.args" -}}
{{- $m := .Values.model }}
{{- if eq .Values.engine "sim" }}
- --model
- {{ $m.id | quote }}
- --served-model-name
- {{ $m.servedName | quote }}
- --port
- {{ .Values.service.port | quote }}
- --max-model-len
- {{ $m.maxModelLen | quote }}
- --max-num-seqs
- {{ .Values.sim.maxNumSeqs | quote }}
- --time-to-first-token
- {{ .Values.sim.timeToFirstToken | quote }}
- --time-to-first-token-std-dev
- {{ .Values.sim.timeToFirstTokenStdDev | quote }}
- --inter-token-latency
- {{ .Values.sim.interTokenLatency | quote }}
- --inter-token-latency-std-dev
- {{ .Values.sim.interTokenLatencyStdDev | quote }}
{{- else }}
- {{ $m.id | quote }}
- --served-model-name
- {{ $m.servedName | quote }}
- --host
- "0.0.0.0"
- --port
- {{ .Values.service.port | quote }}
- --max-model-len
- {{ $m.maxModelLen | quote }}
- --gpu-memory-utilization
- {{ $m.gpuMemoryUtilization | quote }}
- --tensor-parallel-size
- {{ $m.tensorParallelSize | quote }}
{{- range $m.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Gather every rule the schema cannot express and fail once with all messages.
Usage: {{ include "vllm.validateValues" . }}
*/}}
{{- define "vllm.validateValues" -}}
{{- $messages := list }}
{{- if and (eq .Values.engine "vllm") (ne (int .Values.gpu.count) (int .Values.model.tensorParallelSize)) }}
{{- $messages = append $messages (printf "gpu.count (%v) must equal model.tensorParallelSize (%v): one shard per GPU" .Values.gpu.count .Values.model.tensorParallelSize) }}
{{- end }}
{{- if and (eq .Values.engine "vllm") (lt (int .Values.gpu.count) 1) }}
{{- $messages = append $messages "gpu.count must be at least 1 for engine: vllm" }}
{{- end }}
{{- if eq .Values.image.tag "latest" }}
{{- $messages = append $messages "image.tag: 'latest' is not a pinned version; name a vLLM release" }}
{{- end }}
{{- if eq .Values.sim.image.tag "latest" }}
{{- $messages = append $messages "sim.image.tag: 'latest' is not a pinned version; name a simulator release" }}
{{- end }}
{{- if eq .Values.engine "sim" }}
{{- range $key := list "timeToFirstToken" "interTokenLatency" }}
{{- $latency := index $.Values.sim $key | default "" | toString }}
{{- if regexMatch "^(0+(\\.0+)?(ns|us|ms|s|m)?)?$" $latency }}
{{- $messages = append $messages (printf "sim.%s %q: engine sim needs a latency above zero (a Go duration such as 60ms); a simulator that answers instantly passes every latency SLO" $key $latency) }}
{{- end }}
{{- end }}
{{- end }}
{{- if ne .Values.service.type "ClusterIP" }}
{{- $messages = append $messages (printf "service.type %s: only ClusterIP is allowed" .Values.service.type) }}
{{- end }}
{{- if $messages }}
{{- fail (printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages)) }}
{{- end }}
{{- end }}
