{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "payments-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, or the release name when it already holds the chart name. */}}
{{- define "payments-service.fullname" -}}
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

{{- define "payments-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "payments-service.labels" -}}
helm.sh/chart: {{ include "payments-service.chart" . }}
{{ include "payments-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: payments
{{- end }}

{{/* Labels that select the pods (never change them: Deployment selectors are immutable). */}}
{{- define "payments-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payments-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "payments-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "payments-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest when a digest is given, else repository:tag. */}}
{{- define "payments-service.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds = preStop pause + the server's grace period + margin. */}}
{{- define "payments-service.terminationGracePeriodSeconds" -}}
{{- $grace := int (ceil (float64 .Values.config.gracePeriodSeconds)) }}
{{- add .Values.lifecycle.preStopSleepSeconds $grace .Values.lifecycle.terminationMarginSeconds }}
{{- end }}

{{/* Fail early on combinations that would deploy a broken service. */}}
{{- define "payments-service.validate" -}}
{{- $multi := or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- if and $multi (ne .Values.storage.backend "postgres") }}
{{- fail (printf "replicaCount=%v / autoscaling.enabled=%v needs storage.backend=postgres: with the in-memory store each replica would keep its own payments, so idempotency and GetPayment would break across pods. Set storage.backend=postgres (with storage.postgres.existingSecret) or use one replica." .Values.replicaCount .Values.autoscaling.enabled) }}
{{- end }}
{{- if and (eq .Values.storage.backend "postgres") (not .Values.storage.postgres.existingSecret) }}
{{- fail "storage.backend=postgres needs storage.postgres.existingSecret: the name of a Secret holding the DATABASE_URL under storage.postgres.secretKey." }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not .Values.autoscaling.enabled) (kindIs "float64" .Values.podDisruptionBudget.minAvailable) (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) }}
{{- fail (printf "podDisruptionBudget.minAvailable=%v with replicaCount=%v would block every node drain: keep minAvailable below the replica count." .Values.podDisruptionBudget.minAvailable .Values.replicaCount) }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled=true needs tls.secretName: a kubernetes.io/tls Secret with tls.crt and tls.key (and ca.crt when tls.mutual=true)." }}
{{- end }}
{{- if and .Values.tls.mutual (not .Values.tls.enabled) }}
{{- fail "tls.mutual=true needs tls.enabled=true." }}
{{- end }}
{{- /* The health port is always open (the probes use it), so it must never collide. */}}
{{- if or (eq (int .Values.ports.health) (int .Values.ports.grpc)) (and .Values.metrics.enabled (eq (int .Values.ports.health) (int .Values.ports.metrics))) }}
{{- fail (printf "ports.health=%v must differ from ports.grpc=%v and ports.metrics=%v: the probes' health-only port is a server of its own." .Values.ports.health .Values.ports.grpc .Values.ports.metrics) }}
{{- end }}
{{- end }}

{{/* Environment of the server container (and of the migration init container). */}}
{{- define "payments-service.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- $attrs := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.node.name=$(NODE_NAME)" (printf "service.version=%s" .Chart.AppVersion) }}
{{- range $key, $value := .Values.tracing.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- if eq .Values.storage.backend "postgres" }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.storage.postgres.existingSecret }}
      key: {{ .Values.storage.postgres.secretKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The restricted Pod Security Standard, plus a read-only root filesystem. */}}
{{- define "payments-service.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
