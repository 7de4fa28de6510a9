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

{{/*
A value as the service reads it from the environment. Helm reads every number in a values
file as a float, which toString would print as 4.194304e+06 from a million on; whole numbers
are printed as integers, everything else as toString does.
*/}}
{{- define "payments-service.string" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The image tag given (a string, or a number from --set image.tag=20240101), or "". */}}
{{- define "payments-service.tag" -}}
{{- if not (kindIs "invalid" .Values.image.tag) }}
{{- include "payments-service.string" .Values.image.tag }}
{{- end }}
{{- end }}

{{/*
The version this release deploys: the image tag, else the chart's appVersion when the image is
not pinned by a digest alone (a bare digest says nothing about the version: then "").
*/}}
{{- define "payments-service.version" -}}
{{- $tag := include "payments-service.tag" . }}
{{- if $tag }}
{{- $tag }}
{{- else if not .Values.image.digest }}
{{- .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* The image reference: repository:tag, repository:tag@digest, or repository@digest. */}}
{{- define "payments-service.image" -}}
{{- $tag := include "payments-service.tag" . }}
{{- if .Values.image.digest }}
{{- printf "%s%s@%s" .Values.image.repository (ternary (printf ":%s" $tag) "" (ne $tag "")) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion $tag) }}
{{- end }}
{{- end }}

{{/* Labels that select the pods (never change them: Deployment selectors are immutable). */}}
{{- define "payments-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payments-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The chart's own labels, without the selector labels. */}}
{{- define "payments-service.standardLabels" -}}
helm.sh/chart: {{ include "payments-service.chart" . }}
{{- with include "payments-service.version" . }}
app.kubernetes.io/version: {{ . | replace "+" "_" | trunc 63 | trimSuffix "-" | trimSuffix "." | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: payments
{{- end }}

{{/*
Labels on every object: the selector labels, then commonLabels, then the chart's own (the
first of these that sets a key wins; selector keys in commonLabels are refused in validate).
*/}}
{{- define "payments-service.labels" -}}
{{- $selector := include "payments-service.selectorLabels" . | fromYaml }}
{{- $standard := include "payments-service.standardLabels" . | fromYaml }}
{{- toYaml (merge (dict) $selector (.Values.commonLabels | default dict) $standard) }}
{{- end }}

{{/* Labels of the server pods: as above, with podLabels before commonLabels. */}}
{{- define "payments-service.podLabels" -}}
{{- $selector := include "payments-service.selectorLabels" . | fromYaml }}
{{- $standard := include "payments-service.standardLabels" . | fromYaml }}
{{- toYaml (merge (dict) $selector (.Values.podLabels | default dict) (.Values.commonLabels | default dict) $standard) }}
{{- end }}

{{/* Labels of the helm test pod and its policy: never the server's selector labels. */}}
{{- define "payments-service.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "payments-service.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "payments-service.testLabels" -}}
{{- $selector := include "payments-service.testSelectorLabels" . | fromYaml }}
{{- $standard := include "payments-service.standardLabels" . | fromYaml }}
{{- toYaml (merge (dict "app.kubernetes.io/component" "test") $selector (.Values.commonLabels | default dict) $standard) }}
{{- end }}

{{- define "payments-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "payments-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The readiness health service: NOT_SERVING while shutting down or the database is away. */}}
{{- define "payments-service.readinessService" -}}
payments.v1.PaymentService
{{- end }}

{{/* Where the TLS Secret is mounted (a directory, so the kubelet's renewals reach the files). */}}
{{- define "payments-service.tlsDir" -}}
/etc/payments-service/tls
{{- end }}

{{/*
terminationGracePeriodSeconds = preStop pause + the server's grace period + margin (at least
5 s: the server exits within GRACE_PERIOD_SECONDS + 5 s of SIGTERM).
*/}}
{{- define "payments-service.terminationGracePeriodSeconds" -}}
{{- $grace := int (ceil (float64 .Values.config.gracePeriodSeconds)) }}
{{- add (int .Values.lifecycle.preStopSleepSeconds) $grace (int .Values.lifecycle.terminationMarginSeconds) }}
{{- end }}

{{/* The number of pods the release runs at least. */}}
{{- define "payments-service.minPods" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.minReplicas }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Fail early on combinations that would deploy a broken service. */}}
{{- define "payments-service.validate" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is not set: give the registry path you pushed the image to (e.g. registry.example.com/payments/payments-service). There is no public image, and a bare name would be pulled from Docker Hub. make kind-up sets it to the image it builds." }}
{{- end }}
{{- $multi := or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- if and $multi (ne .Values.storage.backend "postgres") }}
{{- fail (printf "replicaCount=%v / autoscaling.enabled=%v needs storage.backend=postgres: with the in-memory store each replica would keep its own payments, so idempotency and GetPayment would break across pods. Set storage.backend=postgres (with storage.postgres.existingSecret) or use one replica." .Values.replicaCount .Values.autoscaling.enabled) }}
{{- end }}
{{- if and (eq .Values.storage.backend "postgres") (not .Values.storage.postgres.existingSecret) }}
{{- fail "storage.backend=postgres needs storage.postgres.existingSecret: the name of a Secret holding the DATABASE_URL under storage.postgres.secretKey." }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas=%v is above autoscaling.maxReplicas=%v: the API would refuse the HorizontalPodAutoscaler." .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) }}
{{- end }}
{{- include "payments-service.validatePodDisruptionBudget" . }}
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
{{- range $key := keys (include "payments-service.selectorLabels" . | fromYaml) }}
{{- range $values := list "podLabels" "commonLabels" }}
{{- if hasKey (index $.Values $values | default dict) $key }}
{{- fail (printf "%s may not set %s: it is a selector label of the Deployment and Service, which the chart sets." $values $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A PodDisruptionBudget must leave a pod to evict, with as few pods as the release runs
(autoscaling.minReplicas when autoscaling), whether the value came as an integer (--set), a
float (a values file) or a percentage.
*/}}
{{- define "payments-service.validatePodDisruptionBudget" -}}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if $pdb.enabled }}
{{- $pods := int (include "payments-service.minPods" .) }}
{{- if not (kindIs "invalid" $pdb.maxUnavailable) }}
{{- $max := int (trimSuffix "%" (toString $pdb.maxUnavailable)) }}
{{- if lt $max 1 }}
{{- fail (printf "podDisruptionBudget.maxUnavailable=%v would block every node drain: allow at least one pod." $pdb.maxUnavailable) }}
{{- end }}
{{- else if not (kindIs "invalid" $pdb.minAvailable) }}
{{- $min := $pdb.minAvailable }}
{{- $blocks := false }}
{{- if kindIs "string" $min }}
{{- /* ceil(p% of n) >= n, in integers: p*n > 100*(n-1) */}}
{{- $blocks = gt (mul (int (trimSuffix "%" $min)) $pods) (mul 100 (sub $pods 1)) }}
{{- else }}
{{- $blocks = ge (int $min) $pods }}
{{- end }}
{{- if $blocks }}
{{- fail (printf "podDisruptionBudget.minAvailable=%v with %v pod(s) (%s) would block every node drain: keep it below the number of pods, or use maxUnavailable." (include "payments-service.string" $min) $pods (ternary "autoscaling.minReplicas" "replicaCount" .Values.autoscaling.enabled)) }}
{{- end }}
{{- end }}
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
{{- /* No service.version: the running code reports its own, whatever the image holds. */}}
{{- $attrs := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.node.name=$(NODE_NAME)" }}
{{- range $key, $value := .Values.tracing.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $key (include "payments-service.string" $value)) }}
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

{{/* envFrom of the server and migration containers: the ConfigMap, then extraEnvFrom. */}}
{{- define "payments-service.envFrom" -}}
- configMapRef:
    name: {{ include "payments-service.fullname" . }}
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts of the server and migration containers. */}}
{{- define "payments-service.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ include "payments-service.tlsDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Egress to the cluster's DNS (networkPolicy.dnsTo on dnsPort), for both policies. */}}
{{- define "payments-service.dnsEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.dnsTo | nindent 4 }}
  ports:
    - port: {{ .Values.networkPolicy.dnsPort }}
      protocol: UDP
    - port: {{ .Values.networkPolicy.dnsPort }}
      protocol: TCP
{{- end }}
