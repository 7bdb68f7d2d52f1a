{{/*
kuberlhf.name: the chart's name, or .Values.nameOverride; at most 63 characters.
Usage: {{ include "kuberlhf.name" . }}
*/}}
{{- define "kuberlhf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
kuberlhf.fullname: the base name of every object: .Values.fullnameOverride, else
"<release>-<name>", else just the release name when it already contains the chart's name.
Truncated to 50 characters so that suffixed names ("-rlhfjob-editor", ...) stay under 63.
Usage: {{ include "kuberlhf.fullname" . }}
*/}}
{{- define "kuberlhf.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
kuberlhf.chart: "<chart>-<version>", the value of the helm.sh/chart label.
Usage: {{ include "kuberlhf.chart" . }}
*/}}
{{- define "kuberlhf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
kuberlhf.selectorLabels: the labels that select the operator's pod (immutable in a
Deployment's selector: never add to them).
Usage: {{- include "kuberlhf.selectorLabels" . | nindent 4 }}
*/}}
{{- define "kuberlhf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kuberlhf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
kuberlhf.labels: the labels of every object: selector labels, chart, version, manager,
part-of, then .Values.commonLabels.
Usage: {{- include "kuberlhf.labels" . | nindent 4 }}
*/}}
{{- define "kuberlhf.labels" -}}
helm.sh/chart: {{ include "kuberlhf.chart" . }}
{{ include "kuberlhf.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kuberlhf
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
kuberlhf.serviceAccountName: the operator's ServiceAccount, created or given.
Fails when serviceAccount.create is false and no name is given: the operator would run
as the namespace's default account, which the chart's RBAC does not bind.
Usage: {{ include "kuberlhf.serviceAccountName" . }}
*/}}
{{- define "kuberlhf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kuberlhf.fullname" .) .Values.serviceAccount.name }}
{{- else if .Values.serviceAccount.name }}
{{- .Values.serviceAccount.name }}
{{- else }}
{{- fail "serviceAccount.name must be set when serviceAccount.create is false" }}
{{- end }}
{{- end }}

{{/*
kuberlhf.image: "<registry>/<repository>@<digest>" or "<registry>/<repository>:<tag>" from an
image dict such as .Values.image; the tag defaults to the chart's appVersion.
Takes a list of exactly two arguments: the image dict and the root context.
Usage: {{ include "kuberlhf.image" (list .Values.image .) }}
*/}}
{{- define "kuberlhf.image" -}}
{{- if ne (len .) 2 }}
{{- fail (printf "kuberlhf.image takes (list <image values> <root context>), got %d arguments" (len .)) }}
{{- end }}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if not $image.repository }}
{{- fail "image.repository must not be empty" }}
{{- end }}
{{- $name := $image.repository }}
{{- if $image.registry }}
{{- $name = printf "%s/%s" $image.registry $image.repository }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $name $image.digest }}
{{- else }}
{{- printf "%s:%s" $name (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
kuberlhf.operatorArgs: the operator's command-line arguments (the image's entrypoint is
`python -m kuberlhf_operator`), one list item per line.
Usage: {{- include "kuberlhf.operatorArgs" . | nindent 12 }}
*/}}
{{- define "kuberlhf.operatorArgs" -}}
- --liveness=http://0.0.0.0:{{ .Values.healthPort }}/healthz
- --log-format={{ .Values.operator.logFormat }}
{{- if .Values.operator.verbose }}
- --verbose
{{- end }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- end }}

{{/*
kuberlhf.monitoringAPI: fails the render when a ServiceMonitor or PodMonitor is asked for but
the cluster does not serve monitoring.coreos.com/v1 (the Prometheus operator's CRDs), rather
than leaving Prometheus silently without targets. `helm template` has no cluster: pass
`--api-versions monitoring.coreos.com/v1` there.
Takes a list: the kind ("ServiceMonitor" or "PodMonitor"), the values key that enabled it,
and the root context.
Usage: {{ include "kuberlhf.monitoringAPI" (list "PodMonitor" "trainerMetrics.podMonitor.enabled" .) }}
*/}}
{{- define "kuberlhf.monitoringAPI" -}}
{{- if ne (len .) 3 }}
{{- fail "kuberlhf.monitoringAPI takes (list <kind> <values key> <root context>)" }}
{{- end }}
{{- $kind := index . 0 }}
{{- $key := index . 1 }}
{{- $root := index . 2 }}
{{- if not ($root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind)) }}
{{- fail (printf "%s is true but the cluster does not serve monitoring.coreos.com/v1 %s: install the Prometheus operator's CRDs first, or set %s=false (with helm template, pass --api-versions monitoring.coreos.com/v1/%s)" $key $kind $key $kind) }}
{{- end }}
{{- end }}

{{/*
kuberlhf.validate: checks across values that a schema cannot express; fails with the fix.
Usage: {{- include "kuberlhf.validate" . }}
*/}}
{{- define "kuberlhf.validate" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled: the operator serves no metrics without it" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled: a ServiceMonitor selects the metrics Service" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.healthPort)) }}
{{- fail (printf "metrics.port and healthPort are both %v: the operator serves /metrics and /healthz on different ports" .Values.metrics.port) }}
{{- end }}
{{- end }}
