{{/*
Names, labels and the gateway config, shared by the templates.
*/}}

{{- define "ztgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resources' base name: the release name when it already says "ztgate",
else <release>-ztgate. 63 characters at most (DNS label).
*/}}
{{- define "ztgate.fullname" -}}
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

{{- define "ztgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. No component here: the gateway's own objects add
`app.kubernetes.io/component: gateway`, the metrics Service `metrics`.
*/}}
{{- define "ztgate.labels" -}}
helm.sh/chart: {{ include "ztgate.chart" . }}
app.kubernetes.io/name: {{ include "ztgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
What selects the gateway pods (Deployment, Services, PDB, NetworkPolicy,
topology spread). Immutable in a Deployment: never change it.
*/}}
{{- define "ztgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ztgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "ztgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ztgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ztgate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "ztgate.configMapName" -}}
{{- default (printf "%s-config" (include "ztgate.fullname" .)) .Values.existingConfigMap }}
{{- end }}

{{/*
The Secrets mounted under /etc/ztgate/tls: a cert-manager Certificate's
Secret when that Certificate is enabled, else the existing Secret (empty:
nothing mounted).
*/}}
{{- define "ztgate.serverSecret" -}}
{{- if .Values.certManager.server.enabled }}
{{- printf "%s-server-tls" (include "ztgate.fullname" .) }}
{{- else }}
{{- .Values.tls.server.existingSecret }}
{{- end }}
{{- end }}

{{- define "ztgate.upstreamSecret" -}}
{{- if .Values.certManager.upstream.enabled }}
{{- printf "%s-upstream-tls" (include "ztgate.fullname" .) }}
{{- else }}
{{- .Values.tls.upstream.existingSecret }}
{{- end }}
{{- end }}

{{- define "ztgate.tlsDir" -}}/etc/ztgate/tls{{- end }}

{{- define "ztgate.hasTlsVolume" -}}
{{- if or (include "ztgate.serverSecret" .) .Values.tls.clientCA.existingSecret (include "ztgate.upstreamSecret" .) }}true{{ end }}
{{- end }}

{{/*
ztgate.yaml: .Values.config with the chart-owned keys (values.yaml lists
them) laid over it, so that ports, certificate paths, writable paths, the
shutdown timing, Redis and the Workload API socket always agree with the
pod spec. A deep merge: the chart's keys win, the rest of a section stays.
*/}}
{{- define "ztgate.config" -}}
{{- $cfg := deepCopy (default dict .Values.config) }}
{{- $tlsDir := include "ztgate.tlsDir" . }}
{{- $listenerTls := dict }}
{{- if include "ztgate.serverSecret" . }}
{{- $_ := set $listenerTls "cert" (printf "%s/server.crt" $tlsDir) }}
{{- $_ := set $listenerTls "key" (printf "%s/server.key" $tlsDir) }}
{{- end }}
{{- if .Values.tls.clientCA.existingSecret }}
{{- $_ := set $listenerTls "client_ca" (printf "%s/client-ca.crt" $tlsDir) }}
{{- end }}
{{- $owned := dict
  "listener" (dict "address" (printf "0.0.0.0:%d" (int .Values.ports.grpc)) "tls" $listenerTls)
  "admin" (dict "address" (printf "0.0.0.0:%d" (int .Values.ports.admin)))
  "server" (dict
    "grace_period" (printf "%ds" (int .Values.shutdown.gracePeriodSeconds))
    "shutdown_timeout" (printf "%ds" (int .Values.shutdown.shutdownTimeoutSeconds))
    "pid_file" "/tmp/ztgate.pid"
    "upgrade_sock" "/tmp/ztgate_upgrade.sock") }}
{{- if .Values.redis.enabled }}
{{- $redis := dict "url" (required "redis.url is required when redis.enabled" .Values.redis.url) }}
{{- if .Values.redis.existingSecret }}
{{- $_ := set $redis "password" "${REDIS_PASSWORD}" }}
{{- end }}
{{- $_ := set $owned "state" (dict "backend" "redis" "redis" $redis) }}
{{- end }}
{{- if .Values.spiffe.enabled }}
{{- $_ := set $owned "spiffe" (dict "workload_api" (printf "unix://%s/%s" .Values.spiffe.socketDir .Values.spiffe.socketName)) }}
{{- end }}
{{- toYaml (mergeOverwrite $cfg $owned) }}
{{- end }}

{{/*
Render-time checks no schema can express; each fails with what to change.
*/}}
{{- define "ztgate.validate" -}}
{{- $s := .Values.shutdown }}
{{- $need := add $s.preStopSeconds $s.gracePeriodSeconds $s.shutdownTimeoutSeconds }}
{{- if le (int $s.terminationGracePeriodSeconds) (int $need) }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) must exceed preStopSeconds + gracePeriodSeconds + shutdownTimeoutSeconds (%d), or the kubelet kills in-flight streams" (int $s.terminationGracePeriodSeconds) (int $need)) }}
{{- end }}
{{- if .Values.podDisruptionBudget.enabled }}
{{- $replicas := ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled }}
{{- if ge (int .Values.podDisruptionBudget.minAvailable) (int $replicas) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below the replica count (%d), or no node can ever be drained" (int .Values.podDisruptionBudget.minAvailable) (int $replicas)) }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled (the ServiceMonitor scrapes that Service)" }}
{{- end }}
{{- if and .Values.certManager.server.enabled (not .Values.certManager.server.issuerRef.name) }}
{{- fail "certManager.server.issuerRef.name is required when certManager.server.enabled" }}
{{- end }}
{{- if and .Values.certManager.server.enabled (not .Values.certManager.server.dnsNames) }}
{{- fail "certManager.server.dnsNames must name what clients dial" }}
{{- end }}
{{- if and .Values.certManager.upstream.enabled (not .Values.certManager.upstream.issuerRef.name) }}
{{- fail "certManager.upstream.issuerRef.name is required when certManager.upstream.enabled" }}
{{- end }}
{{- if and .Values.certManager.upstream.enabled (not .Values.certManager.upstream.uris) }}
{{- fail "certManager.upstream.uris must hold the gateway's SPIFFE ID (the certificate needs a name)" }}
{{- end }}
{{- if not (or .Values.spiffe.enabled .Values.existingConfigMap (include "ztgate.serverSecret" .) (dig "listener" "tls" "cert" "" (default dict .Values.config))) }}
{{- fail "the listener needs a certificate: set tls.server.existingSecret, certManager.server.enabled, spiffe.enabled or config.listener.tls.cert" }}
{{- end }}
{{- end }}
