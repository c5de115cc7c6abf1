{{/* Names are cut to 63 characters: Kubernetes label values and DNS names allow no more. */}}
{{- define "safe-updater.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "safe-updater.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "safe-updater.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "safe-updater.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels must never change after install (Deployment selectors are immutable). */}}
{{- define "safe-updater.selectorLabels" -}}
app.kubernetes.io/name: {{ include "safe-updater.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "safe-updater.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "safe-updater.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "safe-updater.image" -}}
{{- $repo := required "image.repository is required (e.g. <your registry>/safe-updater)" .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "safe-updater.serverName" -}}
{{- printf "%s-prefect-server" (include "safe-updater.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "safe-updater.updaterName" -}}
{{- printf "%s-updater" (include "safe-updater.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret that holds database URLs given as values (when no existing Secret is named). */}}
{{- define "safe-updater.secretName" -}}
{{- printf "%s-db" (include "safe-updater.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "safe-updater.apiUrl" -}}
{{- printf "http://%s.%s.svc:%d/api" (include "safe-updater.serverName" .) .Release.Namespace (int .Values.prefectServer.service.port) -}}
{{- end -}}

{{/*
The `env` entry of a database URL: from an existing Secret, or from the chart's own Secret when
the URL was given as a value. Never a plain `value:`, so the URL (and its password) is not in the
Deployment object. Arguments: dict with envName, db (the values block), key (chart Secret key), root.
*/}}
{{- define "safe-updater.dbUrlEnv" -}}
{{- $secret := "" -}}
{{- $key := "" -}}
{{- if .db.existingSecret.name -}}
{{- $secret = .db.existingSecret.name -}}
{{- $key = .db.existingSecret.key -}}
{{- else if .db.url -}}
{{- $secret = include "safe-updater.secretName" .root -}}
{{- $key = .key -}}
{{- end -}}
{{- if $secret -}}
- name: {{ .envName }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
{{- end -}}
{{- end -}}

{{- define "safe-updater.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "safe-updater.containerSecurityContext" -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}
