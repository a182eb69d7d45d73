{{/* Names are truncated to 63 characters (DNS label limit). */}}
{{- define "sandgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sandgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "sandgate.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The webhook's Service, Deployment, ServiceAccount and both webhook configurations share this name. */}}
{{- define "sandgate.webhookName" -}}
{{- printf "%s-webhook" (include "sandgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The serving certificate's Secret: written by cert-manager, or by the webhook itself. */}}
{{- define "sandgate.tlsSecretName" -}}
{{- printf "%s-tls" (include "sandgate.webhookName" .) -}}
{{- end -}}

{{- define "sandgate.labels" -}}
app.kubernetes.io/name: {{ include "sandgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sandgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sandgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "sandgate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Names exempt from injection: the release's own namespace and kube-system always. */}}
{{- define "sandgate.exemptNamespaces" -}}
{{- concat (list .Release.Namespace "kube-system") .Values.injector.exemptNamespaces | uniq | toJson -}}
{{- end -}}

{{/* CEL: the request's user is one of webhook.policyWriters ("user:NAME" or "group:NAME"). */}}
{{- define "sandgate.isPolicyWriter" -}}
{{- $users := list }}
{{- $groups := list }}
{{- range .Values.webhook.policyWriters }}
{{- if hasPrefix "user:" . }}{{ $users = append $users (trimPrefix "user:" .) }}{{ end }}
{{- if hasPrefix "group:" . }}{{ $groups = append $groups (trimPrefix "group:" .) }}{{ end }}
{{- end -}}
request.userInfo.username in {{ $users | toJson }} || has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in {{ $groups | toJson }})
{{- end -}}

{{/* CEL: the request's namespace is opted in to Sandgate (labelled, and not exempt). */}}
{{- define "sandgate.inOptedInNamespace" -}}
has(namespaceObject.metadata.labels) && 'sandgate.dev/inject' in namespaceObject.metadata.labels && namespaceObject.metadata.labels['sandgate.dev/inject'] == 'enabled' && !(namespaceObject.metadata.name in {{ include "sandgate.exemptNamespaces" . }})
{{- end -}}

{{/* CEL: object X (written X., replaced by the caller) is a Sandgate policy ConfigMap: labelled
sandgate.dev/policy=true anywhere, or holding policy.yaml in an opted-in namespace. */}}
{{- define "sandgate.isPolicyConfigMap" -}}
(has(X.metadata.labels) && 'sandgate.dev/policy' in X.metadata.labels && X.metadata.labels['sandgate.dev/policy'] == 'true') || (({{ include "sandgate.inOptedInNamespace" . }}) && ((has(X.data) && 'policy.yaml' in X.data) || (has(X.binaryData) && 'policy.yaml' in X.binaryData)))
{{- end -}}
