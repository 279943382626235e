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

{{/* The vLLM image tag: image.tag, or the chart's appVersion when it is empty. */}}
{{- define "vllm.vllmTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "vllm.imageTag" -}}
{{- if eq .Values.engine "sim" }}{{ .Values.sim.image.tag }}{{ else }}{{ include "vllm.vllmTag" . }}{{ end }}
{{- end }}

{{/* --served-model-name: model.servedName, or model.id when it is empty. */}}
{{- define "vllm.servedName" -}}
{{- .Values.model.servedName | default .Values.model.id }}
{{- end }}

{{/*
An integer as a quoted string argument. Helm reads numbers from values files as float64, which
`quote` prints as 1e+06 from one million up; int64 first keeps every digit.
*/}}
{{- define "vllm.int" -}}
{{- . | int64 | toString | quote }}
{{- end }}

{{/*
Labels of the helm test pod: the router's (so the NetworkPolicy admits it as it admits the router), one
naming it as this release's test pod, and the chart's bookkeeping labels. Never the model's selector
labels (name + instance): the Service and the NetworkPolicy would then select the test pod itself.
Built as one dict, so no key can appear twice.
*/}}
{{- define "vllm.testPodLabels" -}}
{{- $labels := dict "helm.sh/chart" (include "vllm.chart" .) "app.kubernetes.io/managed-by" .Release.Service "app.kubernetes.io/part-of" "vllm-gate" "app.kubernetes.io/component" "helm-test" }}
{{- $labels = merge (include "vllm.testPodSelector" . | fromYaml) $labels }}
{{- toYaml $labels }}
{{- end }}

{{/* What the NetworkPolicy's test-pod rule selects: the router labels plus vllm-gate/helm-test=<release>. */}}
{{- define "vllm.testPodSelector" -}}
{{- toYaml (merge (dict "vllm-gate/helm-test" .Release.Name) (include "vllm.routerPodLabels" . | fromYaml)) }}
{{- end }}

{{/*
The API router pods' labels the NetworkPolicy admits: networkPolicy.routerPodLabels as given, or
app.kubernetes.io/name=ias-router when none are. The default lives here, not in values.yaml, because Helm
merges a values file's map into the default one: {app: router} would otherwise become
{app: router, app.kubernetes.io/name: ias-router} and select no router that lacks the default label.
*/}}
{{- define "vllm.routerPodLabels" -}}
{{- toYaml (.Values.networkPolicy.routerPodLabels | default (dict "app.kubernetes.io/name" "ias-router")) }}
{{- end }}

{{/* The model cache's claim: the chart's own (<fullname>-model-cache) or modelCache.existingClaim. */}}
{{- define "vllm.cacheClaimName" -}}
{{- if eq .Values.modelCache.type "existingClaim" }}{{ .Values.modelCache.existingClaim }}{{ else }}{{ include "vllm.fullname" . | trunc 51 | trimSuffix "-" }}-model-cache{{ end }}
{{- end }}

{{/*
preStop: sleep until endpoints and the router have dropped the pod, so that SIGTERM only comes after
new requests stopped. vLLM's image has /bin/sleep (an exec hook works on every Kubernetes the chart
allows); the simulator's distroless image has no sleep binary, so it gets the sleep action where the
cluster has it (1.30+) and no hook below that.
*/}}
{{- define "vllm.preStop" -}}
{{- $seconds := .Values.shutdown.preStopSleepSeconds | int64 }}
{{- if eq .Values.engine "vllm" }}
lifecycle:
  preStop:
    exec:
      command: ["sleep", {{ $seconds | toString | quote }}]
{{- else if semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ $seconds }}
{{- end }}
{{- end }}

{{/* Does the NetworkPolicy need a rule of its own for the test pod (the router being in another namespace)? */}}
{{- define "vllm.testPodRule" -}}
{{- if and .Values.tests.enabled .Values.networkPolicy.routerNamespace (ne .Values.networkPolicy.routerNamespace .Release.Namespace) }}true{{ end }}
{{- end }}

{{/* The container image, pinned by tag and, when given, by digest. */}}
{{- define "vllm.image" -}}
{{- if eq .Values.engine "sim" }}
{{- printf "%s:%s" .Values.sim.image.repository .Values.sim.image.tag }}
{{- else if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository (include "vllm.vllmTag" .) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "vllm.vllmTag" .) }}
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
- {{ include "vllm.servedName" . | quote }}
- --port
- {{ include "vllm.int" .Values.service.port }}
- --max-model-len
- {{ include "vllm.int" $m.maxModelLen }}
- --max-num-seqs
- {{ include "vllm.int" .Values.sim.maxNumSeqs }}
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
- {{ include "vllm.servedName" . | quote }}
- --host
- "0.0.0.0"
- --port
- {{ include "vllm.int" .Values.service.port }}
- --max-model-len
- {{ include "vllm.int" $m.maxModelLen }}
- --gpu-memory-utilization
- {{ $m.gpuMemoryUtilization | quote }}
- --tensor-parallel-size
- {{ include "vllm.int" $m.tensorParallelSize }}
{{- range $m.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Where engine: sim mounts the pod's annotations (file "annotations", the downward API format): the stand-in's
default --pod-annotations-file (scripts/vllm-sim/podinfo.go) is this directory's "annotations".
*/}}
{{- define "vllm.simPodInfoDir" -}}
/etc/vllm-gate/podinfo
{{- end }}

{{/*
The simulated model (engine: sim) as pod annotations, never as container args: only the project's stand-in
(scripts/vllm-sim) plays it, and the llm-d image a real cluster runs refuses flags it does not know. The stand-in
reads them in its container from a downward API file (vllm.simPodInfoDir) as defaults for its --chat-template,
--eos-after and --answer-salt; a host-side data plane passes them as those flags (vllm_gate.cluster.dataplane.sim.STANDIN_ANNOTATIONS).
The llm-d image ignores both.
*/}}
{{- define "vllm.simModelAnnotations" -}}
{{- $sim := .Values.sim }}
{{- toYaml (dict "vllm-gate/sim-chat-template" (dig "chatTemplate" "none" $sim) "vllm-gate/sim-eos-after" (dig "eosAfter" 24 $sim | int64 | toString) "vllm-gate/sim-answer-salt" (dig "answerSalt" "" $sim)) }}
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
{{- $shutdown := add (int64 .Values.shutdown.preStopSleepSeconds) (int64 .Values.shutdown.drainSeconds) }}
{{- if lt (int64 .Values.terminationGracePeriodSeconds) $shutdown }}
{{- $messages = append $messages (printf "terminationGracePeriodSeconds (%d) must be at least shutdown.preStopSleepSeconds + shutdown.drainSeconds (%d): the kubelet would SIGKILL in-flight requests" (int64 .Values.terminationGracePeriodSeconds) $shutdown) }}
{{- end }}
{{- $cache := .Values.modelCache }}
{{- if and (eq $cache.type "existingClaim") (not $cache.existingClaim) }}
{{- $messages = append $messages "modelCache.existingClaim: name the PersistentVolumeClaim for type existingClaim" }}
{{- end }}
{{- if and (ne $cache.type "existingClaim") $cache.existingClaim }}
{{- $messages = append $messages (printf "modelCache.existingClaim %q is set but modelCache.type is %s" $cache.existingClaim $cache.type) }}
{{- end }}
{{- if and (eq $cache.type "pvc") (eq $cache.accessMode "ReadWriteOncePod") (or (gt (int64 .Values.replicaCount) 1) (eq (dig "type" "" (.Values.strategy | default dict)) "RollingUpdate")) }}
{{- $messages = append $messages "modelCache.accessMode ReadWriteOncePod admits one pod: it cannot serve more than one replica or a RollingUpdate surge pod" }}
{{- end }}
{{- if ne .Values.service.type "ClusterIP" }}
{{- $messages = append $messages (printf "service.type %s: only ClusterIP is allowed" .Values.service.type) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (eq .Values.autoscaling.controller "keda") (not .Values.autoscaling.keda.prometheusAddress) }}
{{- $messages = append $messages "autoscaling.keda.prometheusAddress: name the Prometheus KEDA's trigger asks for controller keda" }}
{{- end }}
{{- if $messages }}
{{- fail (printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages)) }}
{{- end }}
{{- end }}

{{/*
How Prometheus finds /metrics: "servicemonitor" or "podmonitor" when monitoring.scrape asks for it and the
cluster serves that Prometheus Operator kind, else "annotations" (prometheus.io/* on the pods), so that a
cluster without the operator still gets a scrape target instead of an install failing on an unknown kind.
*/}}
{{- define "vllm.scrapeWiring" -}}
{{- $scrape := .Values.monitoring.scrape }}
{{- if and (eq $scrape "servicemonitor") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}servicemonitor
{{- else if and (eq $scrape "podmonitor") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor") }}podmonitor
{{- else }}annotations
{{- end }}
{{- end }}

{{/* Labels of the ServiceMonitor / PodMonitor: the chart's plus monitoring.labels (the chart's win a clash). Built as one dict, so no key can appear twice. */}}
{{- define "vllm.monitorLabels" -}}
{{- toYaml (merge (include "vllm.labels" . | fromYaml) (.Values.monitoring.labels | default dict)) }}
{{- end }}

{{/* The scrape endpoint's interval and timeout (an empty scrapeTimeout is Prometheus' default). */}}
{{- define "vllm.scrapeEndpoint" -}}
- port: http
  path: /metrics
  interval: {{ .Values.monitoring.interval }}
  {{- with .Values.monitoring.scrapeTimeout }}
  scrapeTimeout: {{ . }}
  {{- end }}
{{- end }}

{{/* A label map as k=v,k=v (sorted keys), for messages. */}}
{{- define "vllm.labelList" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* The Prometheus pods' labels the NetworkPolicy admits: networkPolicy.prometheusPodLabels, or the common default. */}}
{{- define "vllm.prometheusPodLabels" -}}
{{- toYaml (.Values.networkPolicy.prometheusPodLabels | default (dict "app.kubernetes.io/name" "prometheus")) }}
{{- end }}

{{/*
What scales the Deployment: "keda" (a ScaledObject) when autoscaling.controller asks for it and the cluster serves
KEDA's kind, else "hpa" (an autoscaling/v2 HPA on the custom metrics API), so that a cluster without KEDA still gets
a working autoscaler instead of an install failing on an unknown kind.
*/}}
{{- define "vllm.scalingController" -}}
{{- if and (eq .Values.autoscaling.controller "keda") (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject") }}keda
{{- else }}hpa
{{- end }}
{{- end }}

{{/*
KEDA's query: the series summed over the release's Deployment pods (<fullname>-<replicaset>-<pod>) in its namespace;
with metricType AverageValue the HPA KEDA creates divides it by the replica count, a per-pod average like the HPA's.
DCGM series carry the model pod in exported_namespace/exported_pod (dcgm-exporter scraped with honor_labels false)
and one value per GPU: averaged per pod first.
*/}}
{{- define "vllm.kedaQuery" -}}
{{- $pods := printf "%s-[a-z0-9]+-[a-z0-9]+" (include "vllm.fullname" .) }}
{{- $series := .Values.autoscaling.keda.series }}
{{- if hasPrefix "DCGM_" $series -}}
sum(avg by (exported_pod) ({{ $series }}{exported_namespace="{{ .Release.Namespace }}",exported_pod=~"{{ $pods }}"}))
{{- else -}}
sum({{ $series }}{namespace="{{ .Release.Namespace }}",pod=~"{{ $pods }}"})
{{- end }}
{{- end }}

{{/* The autoscaler's behaviour, the HPA's and KEDA's alike: scale up one pod a minute (each loads its weights for
minutes; more at once would only queue on the model cache), down one every two minutes after the window. */}}
{{- define "vllm.scalingBehavior" -}}
scaleUp:
  stabilizationWindowSeconds: {{ .Values.autoscaling.scaleUpStabilizationSeconds | int64 }}
  policies:
    - type: Pods
      value: 1
      periodSeconds: 60
scaleDown:
  stabilizationWindowSeconds: {{ .Values.autoscaling.scaleDownStabilizationSeconds | int64 }}
  policies:
    - type: Pods
      value: 1
      periodSeconds: 120
{{- end }}
