{{/* Names, labels and the pieces every Deployment shares. */}}

{{- define "orders.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orders.fullname" -}}
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

{{/* A component's object name: (dict "root" $ "component" "api") */}}
{{- define "orders.componentName" -}}
{{- printf "%s-%s" (include "orders.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orders.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orders.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "orders.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: orders
{{ include "orders.selectorLabels" . }}
{{- end }}

{{- define "orders.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "orders.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: the existing ServiceAccount to use (serviceAccount.create is false)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Environment shared by the services (each reads only its own; see its settings). */}}
{{- define "orders.env.common" -}}
- name: BIND_HOST
  value: "0.0.0.0"
- name: LOG_LEVEL
  value: {{ .Values.log.level | quote }}
- name: LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: TRACING_SAMPLE_RATIO
  value: {{ .Values.tracing.sampleRatio | quote }}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
{{- end }}
{{- if .Values.redis.urlSecret.name }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.urlSecret.name | quote }}
      key: {{ required "redis.urlSecret.key" .Values.redis.urlSecret.key | quote }}
{{- else }}
- name: REDIS_URL
  value: {{ required "redis.url (or redis.urlSecret.name)" .Values.redis.url | quote }}
{{- end }}
- name: REDIS_KEY_PREFIX
  value: {{ .Values.redis.keyPrefix | quote }}
- name: REDIS_MAX_CONNECTIONS
  value: {{ .Values.redis.maxConnections | quote }}
- name: REDIS_CLUSTER
  value: {{ ternary "1" "0" .Values.redis.cluster | quote }}
- name: REDIS_SHARDS
  value: {{ .Values.redis.shards | quote }}
- name: REDIS_WAIT_REPLICAS
  value: {{ .Values.redis.waitReplicas | quote }}
{{- end }}

{{- define "orders.env.kafka" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers" .Values.kafka.bootstrapServers | quote }}
- name: KAFKA_ORDERS_TOPIC
  value: {{ .Values.kafka.topics.orders | quote }}
- name: KAFKA_DLQ_TOPIC
  value: {{ .Values.kafka.topics.dlq | quote }}
- name: KAFKA_QUARANTINE_TOPIC
  value: {{ .Values.kafka.topics.quarantine | quote }}
- name: KAFKA_STATUS_TOPIC
  value: {{ .Values.kafka.topics.status | quote }}
- name: KAFKA_TOPIC_PARTITIONS
  value: {{ .Values.kafka.topics.partitions | quote }}
- name: KAFKA_REPLICATION_FACTOR
  value: {{ .Values.kafka.topics.replicationFactor | quote }}
{{- with .Values.kafka.topics.minInsyncReplicas }}
- name: KAFKA_MIN_INSYNC_REPLICAS
  value: {{ . | quote }}
{{- end }}
- name: KAFKA_TOPIC_RETENTION_MS
  value: {{ .Values.kafka.topics.retentionMs | int64 | quote }}
{{- end }}

{{- define "orders.env.auth" -}}
- name: AUTH_MODE
  value: {{ .Values.auth.mode | quote }}
{{- if eq .Values.auth.mode "oidc" }}
- name: OIDC_ISSUER
  value: {{ required "auth.issuer: the OpenID Connect provider's issuer URL" .Values.auth.issuer | quote }}
- name: OIDC_AUDIENCE
  value: {{ required "auth.audience: the audience tokens must name" .Values.auth.audience | quote }}
{{- with .Values.auth.tokenUrl }}
- name: OIDC_TOKEN_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.swaggerClientId }}
- name: OIDC_SWAGGER_CLIENT_ID
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Extra plain variables (the service's own over every service's), then the ones from existing Secrets. */}}
{{- define "orders.env.extra" -}}
{{- $taken := list }}
{{- range fromYamlArray .env }}
{{- $taken = append $taken .name }}
{{- end }}
{{- range $name, $value := merge (deepCopy (.values.env | default dict)) (.root.Values.env | default dict) }}
{{- if has $name $taken }}
{{- fail (printf "env %s: the chart sets it from its own values (see values.yaml)" $name) }}
{{- end }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- range concat .root.Values.secretEnv (.values.secretEnv | default list) }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName | quote }}
      key: {{ .key | quote }}
{{- end }}
{{- end }}

{{/*
A service's Deployment: (dict "root" $ "component" "api" "env" (include "orders.env.api" $)).
Its replicas are left to the HPA or KEDA when they scale it.
*/}}
{{- define "orders.deployment" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
{{- $scaled := or (and $values.autoscaling $values.autoscaling.enabled) (and $values.keda $values.keda.enabled) }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "orders.componentName" . }}
  labels:
    {{- include "orders.labels" . | nindent 4 }}
spec:
  {{- if not $scaled }}
  replicas: {{ $values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "orders.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "orders.labels" . | nindent 8 }}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $values.port | quote }}
        prometheus.io/path: /metrics
        {{- with $values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "orders.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . | quote }}
        {{- end }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- if $root.Values.topologySpread }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "orders.selectorLabels" . | nindent 14 }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ printf "%s:%s" $values.image.repository (default $root.Chart.AppVersion $values.image.tag) | quote }}
          imagePullPolicy: {{ $values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $values.port }}
              protocol: TCP
          env:
            {{- .env | nindent 12 }}
            {{- with include "orders.env.extra" (dict "root" $root "values" $values "env" .env) | trim }}
            {{- . | nindent 12 }}
            {{- end }}
          {{- $envFrom := concat $root.Values.envFromSecrets ($values.envFromSecrets | default list) }}
          {{- with $envFrom }}
          envFrom:
            {{- range . }}
            - secretRef:
                name: {{ . | quote }}
            {{- end }}
          {{- end }}
          readinessProbe:
            httpGet:
              path: /health/ready
              port: http
            {{- toYaml $root.Values.probes.readiness | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /health/live
              port: http
            {{- toYaml $root.Values.probes.liveness | nindent 12 }}
          {{- with $values.preStopSleepSeconds }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ . }}
          {{- end }}
          resources:
            {{- required (printf "%s.resources" .component) $values.resources | toYaml | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- end }}

{{/* A service's PodDisruptionBudget. */}}
{{- define "orders.pdb" -}}
{{- $values := index .root.Values .component }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "orders.componentName" . }}
  labels:
    {{- include "orders.labels" . | nindent 4 }}
spec:
  {{- toYaml $values.podDisruptionBudget | nindent 2 }}
  selector:
    matchLabels:
      {{- include "orders.selectorLabels" . | nindent 6 }}
{{- end }}

{{/* A service's ClusterIP Service on its port. */}}
{{- define "orders.service" -}}
{{- $values := index .root.Values .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "orders.componentName" . }}
  labels:
    {{- include "orders.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "orders.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $values.port }}
      targetPort: http
      protocol: TCP
{{- end }}

{{/* A service's HorizontalPodAutoscaler on CPU. */}}
{{- define "orders.hpa" -}}
{{- $values := index .root.Values .component }}
{{- if gt (int $values.autoscaling.minReplicas) (int $values.autoscaling.maxReplicas) }}
{{- fail (printf "%s.autoscaling: minReplicas %v is above maxReplicas %v" .component $values.autoscaling.minReplicas $values.autoscaling.maxReplicas) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "orders.componentName" . }}
  labels:
    {{- include "orders.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "orders.componentName" . }}
  minReplicas: {{ $values.autoscaling.minReplicas }}
  maxReplicas: {{ $values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $values.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
{{- end }}
