{{/* Names are truncated to 63 characters (DNS label limit). */}}
{{- define "sandgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sandgate.webhookName" -}}
{{- printf "%s-webhook" (include "sandgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sandgate.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sandgate.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "sandgate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "sandgate.kubeVersion" -}}
{{- if .Values.webhook.kubernetesVersion -}}
{{ .Values.webhook.kubernetesVersion }}
{{- else -}}
{{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor | trimSuffix "+" }}
{{- end -}}
{{- end -}}

{{/*
The chart-generated serving certificate: made once per render and shared by the Secret and both
webhook configurations (templates render separately; .Values is the one object they share).
*/}}
{{- define "sandgate.tls" -}}
{{- if not (hasKey .Values "__generatedTLS") -}}
{{- $svc := include "sandgate.webhookName" . -}}
{{- $ca := genCA (printf "%s-ca" $svc) (int .Values.tls.validityDays) -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns (int .Values.tls.validityDays) $ca -}}
{{- $_ := set .Values "__generatedTLS" (dict "ca" $ca.Cert "cert" $cert.Cert "key" $cert.Key) -}}
{{- end -}}
{{- end -}}

{{- define "sandgate.caBundle" -}}
{{- if not .Values.tls.certManager.enabled -}}
{{- include "sandgate.tls" . -}}
caBundle: {{ .Values.__generatedTLS.ca | b64enc }}
{{- end -}}
{{- end -}}
