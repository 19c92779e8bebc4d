{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "hydra-authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already contains the
chart name.
*/}}
{{- define "hydra-authz.fullname" -}}
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

{{- define "hydra-authz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hydra-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hydra-authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hydra-authz.labels" -}}
helm.sh/chart: {{ include "hydra-authz.chart" . }}
{{ include "hydra-authz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: ext-authz
{{- end }}

{{- define "hydra-authz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hydra-authz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hydra-authz.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Container ports are fixed; the ConfigMap binds them on 0.0.0.0.
*/}}
{{- define "hydra-authz.grpcContainerPort" -}}9191{{- end }}
{{- define "hydra-authz.httpContainerPort" -}}9192{{- end }}
{{- define "hydra-authz.adminContainerPort" -}}9193{{- end }}
{{/*
The forward-auth listener binds forwardAuth.port itself (container port
"forward-auth": a container port name has at most 15 characters; the
Service port is "http-forward-auth").
*/}}
{{- define "hydra-authz.forwardAuthContainerPort" -}}{{ .Values.forwardAuth.port | int }}{{- end }}
{{- define "hydra-authz.configDir" -}}/etc/hydra-authz{{- end }}

{{/*
Fixed, read-only mount points of the TLS files (not nested in another
mount). The ConfigMap's server.tls / introspection.tls paths point here.
*/}}
{{- define "hydra-authz.serverTlsDir" -}}/etc/hydra-authz-tls/server{{- end }}
{{- define "hydra-authz.introspectionTlsDir" -}}/etc/hydra-authz-tls/introspection{{- end }}
{{- define "hydra-authz.adminTlsDir" -}}/etc/hydra-authz-tls/admin{{- end }}
{{- define "hydra-authz.adminTokenDir" -}}/var/run/secrets/hydra-authz-admin{{- end }}
{{- define "hydra-authz.clusterSecretDir" -}}/var/run/secrets/hydra-authz-cluster{{- end }}
{{- define "hydra-authz.clusterTlsDir" -}}/etc/hydra-authz-tls/redis{{- end }}

{{/*
True ("true") when the gRPC listener serves TLS (serverTls.existingSecret).
*/}}
{{- define "hydra-authz.serverTlsEnabled" -}}
{{- if .Values.serverTls.existingSecret }}true{{ end }}
{{- end }}

{{/*
True ("true") when any introspection TLS file is mounted.
*/}}
{{- define "hydra-authz.introspectionTlsEnabled" -}}
{{- $t := .Values.introspectionTls }}
{{- if or $t.caKey $t.clientCertKey $t.clientKeyKey }}true{{ end }}
{{- end }}

{{/*
Cross-field checks of serverTls / introspectionTls / probes that the values
schema cannot express; each fails the render with the values to fix.
*/}}
{{- define "hydra-authz.validateTls" -}}
{{- $s := .Values.serverTls }}
{{- $i := .Values.introspectionTls }}
{{- if $s.existingSecret }}
{{- if eq .Values.probes.type "grpc" }}
{{- fail "serverTls: probes.type=grpc cannot be used with TLS on the gRPC port (kubelet gRPC probes are plaintext); use probes.type=http (/healthz and /readyz on http-admin)" }}
{{- end }}
{{- if not (and $s.certKey $s.keyKey) }}
{{- fail "serverTls: certKey and keyKey are required with serverTls.existingSecret" }}
{{- end }}
{{- else if or $s.clientCaKey $s.existingConfigMap }}
{{- fail "serverTls.clientCaKey / serverTls.existingConfigMap need serverTls.existingSecret (client certificates only work with TLS on)" }}
{{- end }}
{{- if and $s.existingConfigMap (not $s.clientCaKey) }}
{{- fail "serverTls.existingConfigMap is only read for the client CA: set serverTls.clientCaKey" }}
{{- end }}
{{- if ne (empty $i.clientCertKey) (empty $i.clientKeyKey) }}
{{- fail "introspectionTls: clientCertKey and clientKeyKey go together" }}
{{- end }}
{{- if and $i.clientCertKey (not $i.existingSecret) }}
{{- fail "introspectionTls.clientCertKey / clientKeyKey need introspectionTls.existingSecret" }}
{{- end }}
{{- if and $i.caKey (not (or $i.existingSecret $i.existingConfigMap)) }}
{{- fail "introspectionTls.caKey needs introspectionTls.existingConfigMap or introspectionTls.existingSecret" }}
{{- end }}
{{- if and $i.existingConfigMap (not $i.caKey) }}
{{- fail "introspectionTls.existingConfigMap is only read for the CA bundle: set introspectionTls.caKey" }}
{{- end }}
{{- if and $i.existingSecret (not $i.clientCertKey) (or (not $i.caKey) $i.existingConfigMap) }}
{{- fail "introspectionTls.existingSecret is set but nothing is read from it: set clientCertKey + clientKeyKey and / or caKey" }}
{{- end }}
{{- end }}

{{/*
True ("true") when the introspection auth kind needs a credential.
*/}}
{{- define "hydra-authz.needsSecret" -}}
{{- $kind := .Values.config.introspection.auth.kind }}
{{- if or (eq $kind "bearer") (eq $kind "client_secret_basic") }}true{{ end }}
{{- end }}

{{/*
Name of the Secret holding the introspection credential; fails when a
credential is needed but none is configured.
*/}}
{{- define "hydra-authz.secretName" -}}
{{- $s := .Values.introspectionSecret }}
{{- if $s.existingSecret }}
{{- $s.existingSecret }}
{{- else if $s.create }}
{{- include "hydra-authz.fullname" . }}
{{- else }}
{{- fail (printf "config.introspection.auth.kind=%s needs a credential: set introspectionSecret.existingSecret or introspectionSecret.create + introspectionSecret.value" .Values.config.introspection.auth.kind) }}
{{- end }}
{{- end }}

{{/*
Whether the chart creates the Secret itself.
*/}}
{{- define "hydra-authz.createSecret" -}}
{{- if and (include "hydra-authz.needsSecret" .) .Values.introspectionSecret.create (not .Values.introspectionSecret.existingSecret) }}true{{ end }}
{{- end }}

{{/*
Whether any OpenTelemetry export is configured.
*/}}
{{- define "hydra-authz.otelEnabled" -}}
{{- if or .Values.otel.endpoint .Values.config.telemetry.otlp_endpoint }}true{{ end }}
{{- end }}

{{/*
A TOML basic string. JSON string escapes (\" \\ \n \uXXXX) are valid TOML.
*/}}
{{- define "hydra-authz.tomlString" -}}
{{- toJson (toString .) }}
{{- end }}

{{/*
A TOML array of strings.
*/}}
{{- define "hydra-authz.tomlStrings" -}}
{{- $out := list }}
{{- range . }}{{ $out = append $out (toString .) }}{{ end }}
{{- toJson $out }}
{{- end }}

{{/*
Cross-field checks of admin.* (the admin API listener); each fails the
render with the values to fix.
*/}}
{{- define "hydra-authz.validateAdmin" -}}
{{- $a := .Values.admin }}
{{- if $a.enabled }}
{{- if not (or $a.existingSecret $a.token $a.clientCaSecret) }}
{{- fail "admin.enabled needs credentials: set admin.existingSecret (or admin.token) for a bearer token and / or admin.clientCaSecret for client certificates" }}
{{- end }}
{{- if and $a.existingSecret $a.token }}
{{- fail "admin: set admin.existingSecret or admin.token, not both" }}
{{- end }}
{{- if and (or $a.existingSecret $a.token) (not .Values.serverTls.existingSecret) (not $a.plaintext) }}
{{- fail "admin: a bearer token over plain gRPC can be read off the network; set serverTls.existingSecret (TLS on the admin listener too), or admin.plaintext: true where the pod network is encrypted (a mesh with mTLS)" }}
{{- end }}
{{- if and $a.clientCaSecret (not .Values.serverTls.existingSecret) }}
{{- fail "admin.clientCaSecret (mTLS) needs serverTls.existingSecret: the admin listener presents the server certificate" }}
{{- end }}
{{- else if $a.service.enabled }}
{{- fail "admin.service.enabled needs admin.enabled" }}
{{- end }}
{{- end }}

{{/*
Cross-field checks of forwardAuth.* (the HTTP forward-auth listener); each
fails the render with the values to fix.
*/}}
{{- define "hydra-authz.validateForwardAuth" -}}
{{- $f := .Values.forwardAuth }}
{{- if $f.enabled }}
{{- if not $f.trustedProxies }}
{{- fail "forwardAuth.enabled needs forwardAuth.trustedProxies: the CIDRs of your ingress controller / proxy pods, whose X-Forwarded-* / X-Original-* headers hydra-authz may believe (there is no default that trusts the cluster network)" }}
{{- end }}
{{- $port := int $f.port }}
{{- range $name, $taken := dict "the gRPC listener (9191)" (int (include "hydra-authz.grpcContainerPort" .)) "the HTTP listener (9192)" (int (include "hydra-authz.httpContainerPort" .)) "the admin listener (9193)" (int (include "hydra-authz.adminContainerPort" .)) "service.grpcPort" (int .Values.service.grpcPort) "service.httpPort" (int .Values.service.httpPort) }}
{{- if eq $port $taken }}
{{- fail (printf "forwardAuth.port %d is already used by %s: pick another port" $port $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
True ("true") when the admin listener authenticates with a bearer token file.
*/}}
{{- define "hydra-authz.adminTokenEnabled" -}}
{{- if and .Values.admin.enabled (or .Values.admin.existingSecret .Values.admin.token) }}true{{ end }}
{{- end }}

{{/*
Name of the Secret holding the admin bearer token.
*/}}
{{- define "hydra-authz.adminSecretName" -}}
{{- default (include "hydra-authz.adminFullname" .) .Values.admin.existingSecret }}
{{- end }}

{{/*
<fullname>-admin, within the 63-character limit: the admin Service and the
chart-created admin Secret.
*/}}
{{- define "hydra-authz.adminFullname" -}}
{{- printf "%s-admin" (include "hydra-authz.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
Whether the chart creates the admin token Secret itself.
*/}}
{{- define "hydra-authz.createAdminSecret" -}}
{{- if and .Values.admin.enabled .Values.admin.token (not .Values.admin.existingSecret) }}true{{ end }}
{{- end }}

{{/*
config.server.limits: hydra-authz refuses an idle timeout that would cut off
live gRPC peers between keep-alive pings; fail the render instead.
*/}}
{{- define "hydra-authz.validateLimits" -}}
{{- with .Values.config.server.limits }}
{{- if le (int64 .idle_timeout_ms) (add (int64 .grpc_keepalive_interval_ms) (int64 .grpc_keepalive_timeout_ms)) }}
{{- fail "config.server.limits.idle_timeout_ms must exceed grpc_keepalive_interval_ms + grpc_keepalive_timeout_ms (live gRPC peers would be cut off)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Cross-field checks of cluster.* (fleet mode, config [cluster]); each fails
the render with the values to fix. Nothing is checked while cluster.enabled
is false: then no cluster.* value is used. The schema already refuses a
password in cluster.redisUrl; it is refused here as well, so it cannot reach
the ConfigMap when schema validation is skipped.
*/}}
{{- define "hydra-authz.validateCluster" -}}
{{- $c := .Values.cluster }}
{{- if $c.enabled }}
{{- if not (regexMatch "^rediss?://[^/?#]" (toString $c.redisUrl)) }}
{{- fail "cluster.enabled needs cluster.redisUrl: redis://host:port/db, or rediss://host:port/db for TLS" }}
{{- end }}
{{- if regexMatch "^rediss?://[^/?#@]*:[^/?#@]*@" $c.redisUrl }}
{{- fail "cluster.redisUrl must not contain a password (it would be in the ConfigMap): put it in cluster.existingSecret under cluster.passwordKey" }}
{{- end }}
{{- if and $c.sharedCache (not $c.existingSecret) }}
{{- fail "cluster.sharedCache needs cluster.existingSecret: a Secret holding the cluster secret (key cluster.clusterSecretKey, at least 32 bytes, the same for every pod), the HMAC key of the shared cache" }}
{{- end }}
{{- if not $c.existingSecret }}
{{- fail "cluster.enabled needs cluster.existingSecret: a Secret holding the Redis password (key cluster.passwordKey) and the cluster secret (key cluster.clusterSecretKey); the chart never puts them in the ConfigMap" }}
{{- end }}
{{- if not (or $c.passwordKey $c.clusterSecretKey) }}
{{- fail "cluster.existingSecret is set but nothing is read from it: set cluster.passwordKey and / or cluster.clusterSecretKey" }}
{{- end }}
{{- if not $c.clusterSecretKey }}
{{- fail "cluster.enabled needs cluster.clusterSecretKey: the key of the cluster secret (at least 32 bytes, the same for every pod) in cluster.existingSecret; it keys cache entries and seals purge messages and shared-cache values" }}
{{- end }}
{{- if and $c.sharedCache (not .Values.config.introspection.cache.enabled) }}
{{- fail "cluster.sharedCache needs config.introspection.cache.enabled: the shared cache sits behind each pod's own cache" }}
{{- end }}
{{- $t := $c.tls }}
{{- if $t.enabled }}
{{- if not $t.existingSecret }}
{{- fail "cluster.tls.enabled needs cluster.tls.existingSecret (the CA and / or client certificate for Redis); a rediss:// Redis with a publicly trusted certificate needs no cluster.tls: leave it off" }}
{{- end }}
{{- if not (hasPrefix "rediss://" $c.redisUrl) }}
{{- fail "cluster.tls.enabled needs a rediss:// cluster.redisUrl: redis:// is plaintext, and hydra-authz refuses tls_* files with it" }}
{{- end }}
{{- if ne (empty $t.certKey) (empty $t.keyKey) }}
{{- fail "cluster.tls: certKey and keyKey go together" }}
{{- end }}
{{- if not (or $t.caKey $t.certKey) }}
{{- fail "cluster.tls.existingSecret is set but nothing is read from it: set cluster.tls.caKey and / or cluster.tls.certKey + keyKey" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
