package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// specEnv reads the configuration variables docs/configuration.md's table
// documents (its rows' first cells), failing the test when it finds none.
func specEnv(t *testing.T) map[string]bool {
	t.Helper()
	env := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(PUBLISHER_[A-Z0-9_]+)` \\|").FindAllStringSubmatch(string(readFile(t, "../docs/configuration.md")), -1) {
		env[m[1]] = true
	}
	if len(env) < 30 {
		t.Fatalf("docs/configuration.md's table documents %d variables, want its ~40 rows", len(env))
	}
	return env
}

// specMetrics are the metric families the service exposes (the README's
// Metrics table).
var specMetrics = []string{
	"publisher_messages_total",
	"publisher_publish_duration_seconds",
	"publisher_inflight_messages",
	"publisher_buffered_messages",
	"publisher_republished_total",
	"publisher_connection_up",
	"publisher_connection_blocked",
	"publisher_ready",
	"publisher_supervision_restarts_total",
	"publisher_supervision_escalations_total",
	"publisher_supervision_failures_total",
	"publisher_http_requests_total",
	"publisher_spool_messages",
	"publisher_spool_bytes",
	"publisher_spool_max_bytes",
	"publisher_spool_fsync_duration_seconds",
	"publisher_spool_corrupt_segments_total",
	"publisher_spool_dead_lettered_total",
	"publisher_spool_accepting",
	"publisher_spool_segment_bytes",
	"publisher_spool_lost_records_total",
	"publisher_given_up",
	"publisher_tls_client_cert_expiry_timestamp_seconds",
	"publisher_idempotency_keys",
	"publisher_idempotency_replays_total",
	"publisher_idempotency_evictions_total",
}

// usesMetric reports whether a PromQL expression names the metric family
// m: m, or one of its histogram series m_bucket, m_sum, m_count, as a whole
// word. It only tells which families the dashboard shows; that each name and
// label exists is checked against the real /metrics by Prometheus itself
// (cmd/publisher's TestDashboardAndRulesAgainstPrometheus).
func usesMetric(expr, m string) bool {
	re := regexp.MustCompile(`(^|[^a-zA-Z0-9_:])` + regexp.QuoteMeta(m) + `(_bucket|_sum|_count)?($|[^a-zA-Z0-9_:])`)
	return re.MatchString(expr)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---------------------------------------------------------------- compose

type composeFile struct {
	Services map[string]composeService `json:"services"`
}

type composeService struct {
	Image       string          `json:"image"`
	Build       json.RawMessage `json:"build"`
	Environment json.RawMessage `json:"environment"`
	Ports       []string        `json:"ports"`
	Volumes     []string        `json:"volumes"`
	DependsOn   json.RawMessage `json:"depends_on"`
	Healthcheck *struct {
		Test json.RawMessage `json:"test"`
	} `json:"healthcheck"`
	Profiles        []string `json:"profiles"`
	StopGracePeriod string   `json:"stop_grace_period"`
}

// env returns the service environment, given as a map or as a KEY=value list.
func (s composeService) env(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	if len(s.Environment) == 0 {
		return out
	}
	var m map[string]any
	if err := json.Unmarshal(s.Environment, &m); err == nil {
		for k, v := range m {
			out[k] = toString(v)
		}
		return out
	}
	var l []string
	if err := json.Unmarshal(s.Environment, &l); err != nil {
		t.Fatalf("environment is neither a map nor a list: %s", s.Environment)
	}
	for _, kv := range l {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	if err := yaml.Unmarshal(readFile(t, "../docker-compose.yml"), &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

func TestComposeServices(t *testing.T) {
	c := loadCompose(t)
	var top map[string]any
	if err := yaml.Unmarshal(readFile(t, "../docker-compose.yml"), &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top["name"]; ok {
		t.Error("compose: a top-level name: is rejected by docker-compose 1.x; the project name comes from the directory")
	}
	for _, name := range []string{"rabbitmq", "publisher", "prometheus", "grafana"} {
		s, ok := c.Services[name]
		if !ok {
			t.Fatalf("compose: service %q missing", name)
		}
		if len(s.Profiles) > 0 {
			t.Errorf("compose: service %q must start with a plain `docker compose up` (no profiles)", name)
		}
	}

	rabbit := c.Services["rabbitmq"]
	if !strings.HasPrefix(rabbit.Image, "rabbitmq:3.13-management") {
		t.Errorf("rabbitmq image = %q, want rabbitmq:3.13-management", rabbit.Image)
	}
	if rabbit.Healthcheck == nil {
		t.Fatal("rabbitmq: no healthcheck")
	}
	hc := string(rabbit.Healthcheck.Test)
	if !strings.Contains(hc, "rabbitmq-diagnostics") || !strings.Contains(hc, "ping") {
		t.Errorf("rabbitmq healthcheck %s does not use rabbitmq-diagnostics ping", hc)
	}
	for _, p := range []string{"5672:5672", "15672:15672"} {
		if !contains(rabbit.Ports, p) {
			t.Errorf("rabbitmq: port %s not published (ports %q)", p, rabbit.Ports)
		}
	}

	pub := c.Services["publisher"]
	var build struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	}
	if err := json.Unmarshal(pub.Build, &build); err != nil {
		t.Fatalf("publisher build: %v", err)
	}
	if build.Context != "." || build.Dockerfile != "deploy/Dockerfile" {
		t.Errorf("publisher build = %+v, want context . and dockerfile deploy/Dockerfile", build)
	}
	if _, err := os.Stat(filepath.Join("..", build.Context, build.Dockerfile)); err != nil {
		t.Errorf("publisher dockerfile: %v", err)
	}
	var deps map[string]struct {
		Condition string `json:"condition"`
	}
	if err := json.Unmarshal(pub.DependsOn, &deps); err != nil {
		t.Fatalf("publisher depends_on must be a map with conditions: %v", err)
	}
	if deps["rabbitmq"].Condition != "service_healthy" {
		t.Errorf("publisher depends_on rabbitmq condition = %q, want service_healthy", deps["rabbitmq"].Condition)
	}
	env := pub.env(t)
	// docker stop sends SIGTERM, then SIGKILL after stop_grace_period (10s
	// by default): it must cover the shutdown timeout and the 2s the service
	// may take beyond it.
	shutdown, err := time.ParseDuration(env["PUBLISHER_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("publisher PUBLISHER_SHUTDOWN_TIMEOUT: %v", err)
	}
	if grace, err := time.ParseDuration(pub.StopGracePeriod); err != nil || grace <= shutdown+2*time.Second {
		t.Errorf("publisher stop_grace_period %q must exceed PUBLISHER_SHUTDOWN_TIMEOUT %v + 2s", pub.StopGracePeriod, shutdown)
	}
	if got := env["PUBLISHER_AMQP_URLS"]; got != "amqp://guest:guest@rabbitmq:5672/" {
		t.Errorf("PUBLISHER_AMQP_URLS = %q", got)
	}
	if got := env["PUBLISHER_LISTEN_ADDR"]; got != "0.0.0.0:8080" {
		t.Errorf("PUBLISHER_LISTEN_ADDR = %q, want 0.0.0.0:8080", got)
	}
	if got := env["GOMAXPROCS"]; got != "1" {
		t.Errorf("GOMAXPROCS = %q, want \"1\" (as the Kubernetes sidecar runs)", got)
	}
	for _, p := range []string{"8080:8080", "9464:9464"} {
		if !contains(pub.Ports, p) {
			t.Errorf("publisher: port %s not published (ports %q)", p, pub.Ports)
		}
	}

	// Prometheus and Grafana mount the deploy/ files that exist.
	wantMounts := map[string][]string{
		"prometheus": {"./deploy/prometheus"},
		"grafana":    {"./deploy/grafana/provisioning", "./deploy/grafana/dashboards"},
	}
	for svc, mounts := range wantMounts {
		for _, m := range mounts {
			found := false
			for _, v := range c.Services[svc].Volumes {
				if strings.HasPrefix(v, m+":") {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: no volume mounting %s (volumes %q)", svc, m, c.Services[svc].Volumes)
			}
		}
	}
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join("..", src)); err != nil {
					t.Errorf("%s: volume source %s: %v", name, src, err)
				}
			}
		}
	}
	genv := c.Services["grafana"].env(t)
	if genv["GF_AUTH_ANONYMOUS_ENABLED"] != "true" || genv["GF_AUTH_ANONYMOUS_ORG_ROLE"] != "Viewer" {
		t.Errorf("grafana: anonymous viewer access not enabled: %v", genv)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------- env names

// collectEnvNames walks any YAML document for Kubernetes-style env lists
// ([{name: X, ...}]) under an "env" key.
func collectEnvNames(v any, inEnv bool, out map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		if inEnv {
			if n, ok := v["name"].(string); ok {
				out[n] = true
			}
		}
		for k, child := range v {
			collectEnvNames(child, k == "env", out)
		}
	case []any:
		for _, child := range v {
			collectEnvNames(child, inEnv, out)
		}
	}
}

var envWord = regexp.MustCompile(`\bPUBLISHER_[A-Z0-9_]+\b`)

func TestEnvNamesAreInSpec(t *testing.T) {
	used := map[string]map[string]bool{} // file -> names

	c := loadCompose(t)
	used["docker-compose.yml"] = map[string]bool{}
	for _, s := range c.Services {
		for k := range s.env(t) {
			used["docker-compose.yml"][k] = true
		}
	}

	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no kubernetes manifests: %v", err)
	}
	for _, f := range files {
		var doc any
		if err := yaml.Unmarshal(readFile(t, f), &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		used[f] = map[string]bool{}
		collectEnvNames(doc, false, used[f])
	}

	// ENV lines of the Dockerfile.
	used["Dockerfile"] = map[string]bool{}
	for _, ins := range dockerInstructions(t) {
		if ins.cmd == "ENV" {
			for _, w := range envWord.FindAllString(ins.args, -1) {
				used["Dockerfile"][w] = true
			}
		}
	}

	documented := specEnv(t)
	for file, names := range used {
		for n := range names {
			if strings.HasPrefix(n, "PUBLISHER_") && !documented[n] {
				t.Errorf("%s: %s is not a configuration variable docs/configuration.md documents", file, n)
			}
		}
	}
	// Any PUBLISHER_* word mentioned in the manifests (comments included).
	for _, f := range append(files, "../docker-compose.yml", "Dockerfile") {
		for _, w := range envWord.FindAllString(string(readFile(t, f)), -1) {
			if !documented[w] {
				t.Errorf("%s mentions %s, which is not a configuration variable docs/configuration.md documents", f, w)
			}
		}
	}
}

// ---------------------------------------------------------------- kubernetes

type k8sEnv struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `json:"name"`
			Key  string `json:"key"`
		} `json:"secretKeyRef"`
	} `json:"valueFrom"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `json:"path"`
		Port any    `json:"port"`
	} `json:"httpGet"`
}

type k8sSecurityContext struct {
	RunAsNonRoot             *bool  `json:"runAsNonRoot"`
	RunAsUser                *int64 `json:"runAsUser"`
	ReadOnlyRootFilesystem   *bool  `json:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool  `json:"allowPrivilegeEscalation"`
	Capabilities             *struct {
		Drop []string `json:"drop"`
	} `json:"capabilities"`
	SeccompProfile *struct {
		Type string `json:"type"`
	} `json:"seccompProfile"`
}

type k8sContainer struct {
	Name          string `json:"name"`
	Image         string `json:"image"`
	RestartPolicy string `json:"restartPolicy"`
	Ports         []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	Env          []k8sEnv `json:"env"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
	StartupProbe   *k8sProbe `json:"startupProbe"`
	LivenessProbe  *k8sProbe `json:"livenessProbe"`
	ReadinessProbe *k8sProbe `json:"readinessProbe"`
	Lifecycle      *struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `json:"seconds"`
			} `json:"sleep"`
		} `json:"preStop"`
	} `json:"lifecycle"`
	Resources struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits"`
	} `json:"resources"`
	SecurityContext *k8sSecurityContext `json:"securityContext"`
}

type k8sDeployment struct {
	Kind string `json:"kind"`
	Spec struct {
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds *int               `json:"terminationGracePeriodSeconds"`
				SecurityContext               k8sSecurityContext `json:"securityContext"`
				InitContainers                []k8sContainer     `json:"initContainers"`
				Containers                    []k8sContainer     `json:"containers"`
				Volumes                       []struct {
					Name   string `json:"name"`
					Secret *struct {
						SecretName string `json:"secretName"`
						Items      []struct {
							Key  string `json:"key"`
							Path string `json:"path"`
						} `json:"items"`
					} `json:"secret"`
				} `json:"volumes"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

func TestKubernetesSidecar(t *testing.T) {
	var d k8sDeployment
	if err := yaml.Unmarshal(readFile(t, "kubernetes/deployment.yaml"), &d); err != nil {
		t.Fatal(err)
	}
	if d.Kind != "Deployment" {
		t.Fatalf("kind = %q", d.Kind)
	}
	pod := d.Spec.Template.Spec
	var pub *k8sContainer
	for i := range pod.InitContainers {
		if pod.InitContainers[i].Name == "publisher" {
			pub = &pod.InitContainers[i]
		}
	}
	if pub == nil {
		t.Fatal("publisher is not in initContainers (native sidecar)")
	}
	for _, c := range pod.Containers {
		if c.Name == "publisher" {
			t.Error("publisher must be a native sidecar, not a regular container")
		}
	}
	if pub.RestartPolicy != "Always" {
		t.Errorf("publisher restartPolicy = %q, want Always (native sidecar)", pub.RestartPolicy)
	}

	// Probes on the admin port.
	portOf := func(p any) int {
		switch p := p.(type) {
		case float64:
			return int(p)
		case string:
			for _, cp := range pub.Ports {
				if cp.Name == p {
					return cp.ContainerPort
				}
			}
			n, _ := strconv.Atoi(p)
			return n
		}
		return 0
	}
	checkProbe := func(name string, p *k8sProbe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: missing httpGet", name)
			return
		}
		if p.HTTPGet.Path != path || portOf(p.HTTPGet.Port) != 9464 {
			t.Errorf("%s probe = %s port %v, want %s on 9464", name, p.HTTPGet.Path, p.HTTPGet.Port, path)
		}
	}
	checkProbe("liveness", pub.LivenessProbe, "/healthz")
	checkProbe("readiness", pub.ReadinessProbe, "/readyz")
	if pub.StartupProbe != nil {
		checkProbe("startup", pub.StartupProbe, "/healthz")
	}

	env := map[string]k8sEnv{}
	for _, e := range pub.Env {
		env[e.Name] = e
	}

	// Half a core of CPU limit: one scheduler thread (Go's container-aware
	// default is never below 2).
	if got := env["GOMAXPROCS"].Value; got != "1" {
		t.Errorf("sidecar GOMAXPROCS = %q, want \"1\" (its CPU limit is half a core)", got)
	}

	// Shutdown timing.
	st, ok := env["PUBLISHER_SHUTDOWN_TIMEOUT"]
	if !ok {
		t.Fatal("PUBLISHER_SHUTDOWN_TIMEOUT not set")
	}
	shutdown, err := time.ParseDuration(st.Value)
	if err != nil {
		t.Fatalf("PUBLISHER_SHUTDOWN_TIMEOUT: %v", err)
	}
	if pub.Lifecycle == nil || pub.Lifecycle.PreStop == nil || pub.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("publisher: no preStop sleep action (distroless has no shell for exec)")
	}
	preStop := time.Duration(pub.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	if preStop <= 0 {
		t.Errorf("preStop sleep = %v", preStop)
	}
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("terminationGracePeriodSeconds not set")
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	// The service exits within PUBLISHER_SHUTDOWN_TIMEOUT plus exitSlack, even
	// against a stalled broker (README, Shutdown); native sidecars get their
	// SIGTERM only after the app containers exited, so the app's preStop
	// comes first, out of the same budget.
	const exitSlack = 2 * time.Second
	var appPreStop time.Duration
	for _, c := range pod.Containers {
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			appPreStop = max(appPreStop, time.Duration(c.Lifecycle.PreStop.Sleep.Seconds)*time.Second)
		}
	}
	if need := appPreStop + preStop + shutdown + exitSlack; grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v must exceed the app's preStop %v + the publisher's preStop %v + PUBLISHER_SHUTDOWN_TIMEOUT %v + %v exit slack = %v",
			grace, appPreStop, preStop, shutdown, exitSlack, need)
	}

	// Secrets: broker URLs and token come from a Secret, never a literal.
	secretNames := map[string]map[string]bool{}
	var secret struct {
		Kind       string                `json:"kind"`
		Metadata   struct{ Name string } `json:"metadata"`
		Data       map[string]string     `json:"data"`
		StringData map[string]string     `json:"stringData"`
	}
	if err := yaml.Unmarshal(readFile(t, "kubernetes/secret.yaml"), &secret); err != nil {
		t.Fatal(err)
	}
	if secret.Kind != "Secret" {
		t.Fatalf("secret.yaml kind = %q", secret.Kind)
	}
	secretNames[secret.Metadata.Name] = map[string]bool{}
	for k := range secret.StringData {
		secretNames[secret.Metadata.Name][k] = true
	}
	for k := range secret.Data {
		secretNames[secret.Metadata.Name][k] = true
	}
	fromSecret := func(e k8sEnv) bool {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			return false
		}
		ref := e.ValueFrom.SecretKeyRef
		if !secretNames[ref.Name][ref.Key] {
			t.Errorf("%s: secret %s key %s is not in secret.yaml", e.Name, ref.Name, ref.Key)
		}
		return true
	}
	// fileOfSecret reports whether path is a file of a Secret volume mounted
	// in the publisher container.
	fileOfSecret := func(path string) bool {
		for _, m := range pub.VolumeMounts {
			if filepath.Dir(path) != filepath.Clean(m.MountPath) {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name != m.Name || v.Secret == nil {
					continue
				}
				base := filepath.Base(path)
				if len(v.Secret.Items) == 0 && secretNames[v.Secret.SecretName][base] {
					return true
				}
				for _, it := range v.Secret.Items {
					if it.Path == base && secretNames[v.Secret.SecretName][it.Key] {
						return true
					}
				}
			}
		}
		return false
	}
	// The broker URLs hold credentials: from a Secret, as a variable or,
	// better (read again at every connection), as a file.
	urls, urlsSet := env["PUBLISHER_AMQP_URLS"]
	urlsFile, fileSet := env["PUBLISHER_AMQP_URLS_FILE"]
	switch {
	case urlsSet && fileSet:
		t.Error("both PUBLISHER_AMQP_URLS and PUBLISHER_AMQP_URLS_FILE are set (the file wins: set one)")
	case fileSet:
		if !fileOfSecret(urlsFile.Value) {
			t.Errorf("PUBLISHER_AMQP_URLS_FILE %s is not a file of a mounted Secret volume", urlsFile.Value)
		}
	case !urlsSet || !fromSecret(urls):
		t.Error("PUBLISHER_AMQP_URLS must come from a Secret (secretKeyRef), or PUBLISHER_AMQP_URLS_FILE name a file of one")
	}
	if e, ok := env["PUBLISHER_AUTH_TOKEN"]; ok && !fromSecret(e) {
		t.Error("PUBLISHER_AUTH_TOKEN must not be a literal")
	}
	tokenFile, ok := env["PUBLISHER_AUTH_TOKEN_FILE"]
	if !ok {
		t.Fatal("PUBLISHER_AUTH_TOKEN_FILE not set")
	}
	if !fileOfSecret(tokenFile.Value) {
		t.Errorf("PUBLISHER_AUTH_TOKEN_FILE %s is not a file of a mounted Secret volume", tokenFile.Value)
	}
	for _, app := range pod.Containers {
		for _, m := range app.VolumeMounts {
			if m.Name == "publisher-broker" {
				t.Errorf("container %s mounts the broker's credentials; only the publisher needs them", app.Name)
			}
		}
	}

	// Hardening.
	sc := pub.SecurityContext
	if sc == nil {
		t.Fatal("publisher: no securityContext")
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) ||
		(sc.RunAsNonRoot == nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot)
	if !nonRoot {
		t.Error("publisher: runAsNonRoot is not true")
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		t.Error("publisher: runAsUser 0")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("publisher: readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("publisher: allowPrivilegeEscalation is not false")
	}
	if sc.Capabilities == nil || !contains(sc.Capabilities.Drop, "ALL") {
		t.Error("publisher: capabilities do not drop ALL")
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != "RuntimeDefault" {
		t.Error("publisher: seccompProfile is not RuntimeDefault")
	}
	for _, kind := range []string{"cpu", "memory"} {
		if pub.Resources.Requests[kind] == "" {
			t.Errorf("publisher: no %s request", kind)
		}
	}
	// A full default buffer measured 227-230 MiB, and the default bound of
	// idempotency keys adds up to ~14 MiB (docs/operations.md, "Memory"): a
	// lower limit gets the sidecar OOM-killed exactly when the broker blocks.
	if lim := pub.Resources.Limits["memory"]; lim == "" {
		t.Error("publisher: no memory limit")
	} else if mib, ok := strings.CutSuffix(lim, "Mi"); !ok {
		t.Errorf("publisher: memory limit %q, want a value in Mi", lim)
	} else if n, err := strconv.Atoi(mib); err != nil || n < 288 {
		t.Errorf("publisher: memory limit %q is below what a full default buffer and the default key bound need (~245 MiB measured) with room to spare", lim)
	}
}

func TestPodMonitorSetsJob(t *testing.T) {
	b := readFile(t, "kubernetes/podmonitor.yaml")
	var pm struct {
		Kind string `json:"kind"`
		Spec struct {
			Endpoints []struct {
				Port        string `json:"port"`
				Relabelings []struct {
					TargetLabel string `json:"targetLabel"`
					Replacement string `json:"replacement"`
				} `json:"relabelings"`
			} `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &pm); err != nil {
		t.Fatal(err)
	}
	if pm.Kind != "PodMonitor" || len(pm.Spec.Endpoints) != 1 || pm.Spec.Endpoints[0].Port != "admin" {
		t.Fatalf("podmonitor: unexpected %+v", pm)
	}
	ok := false
	for _, r := range pm.Spec.Endpoints[0].Relabelings {
		ok = ok || (r.TargetLabel == "job" && r.Replacement == "publisher")
	}
	if !ok {
		t.Error(`podmonitor: no relabeling to job="publisher" (the rules and dashboard select on it)`)
	}
}

// ---------------------------------------------------------------- Dockerfile

type instruction struct {
	cmd  string
	args string
}

func dockerInstructions(t *testing.T) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, "Dockerfile")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		full := cur.String()
		cur.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
	}
	if cur.Len() > 0 {
		t.Fatal("Dockerfile: dangling line continuation")
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := dockerInstructions(t)
	var froms []string
	user := ""
	sawBuild, sawCopyFrom := false, false
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in.args)
			user = "" // USER is per stage
		case "USER":
			user = in.args
		case "HEALTHCHECK":
			t.Error("Dockerfile: no HEALTHCHECK (probes belong to the orchestrator)")
		case "RUN":
			if strings.Contains(in.args, "go build") {
				sawBuild = true
				for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "./cmd/publisher"} {
					if !strings.Contains(in.args, want) {
						t.Errorf("Dockerfile: go build lacks %s: %s", want, in.args)
					}
				}
			}
		case "COPY":
			if strings.HasPrefix(in.args, "--from=") {
				sawCopyFrom = true
			}
		}
	}
	if len(froms) < 2 {
		t.Fatalf("Dockerfile: want a multi-stage build, got FROM %q", froms)
	}
	if !strings.HasPrefix(froms[0], "golang:1.26") {
		t.Errorf("Dockerfile: builder = %q, want golang:1.26", froms[0])
	}
	if last := froms[len(froms)-1]; !strings.HasPrefix(last, "gcr.io/distroless/static-debian12:nonroot") {
		t.Errorf("Dockerfile: runtime = %q, want distroless static nonroot", last)
	}
	if !sawBuild || !sawCopyFrom {
		t.Error("Dockerfile: missing go build stage or COPY --from")
	}
	u, _, _ := strings.Cut(user, ":")
	if u == "" || u == "root" || u == "0" {
		t.Errorf("Dockerfile: final USER = %q, want non-root (65532)", user)
	}
	text := string(readFile(t, "Dockerfile"))
	for _, want := range []string{"EXPOSE 8080 9464", `ENTRYPOINT ["/publisher"]`, "ENV PUBLISHER_LISTEN_ADDR=0.0.0.0:8080"} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile: missing %s", want)
		}
	}
}

// ---------------------------------------------------------------- Grafana

func TestDashboard(t *testing.T) {
	b := readFile(t, "grafana/dashboards/publisher.json")
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs []string
	var collect func(v any)
	collect = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				}
				collect(c)
			}
		case []any:
			for _, c := range v {
				collect(c)
			}
		}
	}
	collect(dash)
	for _, m := range specMetrics {
		if !slices.ContainsFunc(exprs, func(e string) bool { return usesMetric(e, m) }) {
			t.Errorf("dashboard has no panel for %s", m)
		}
	}
	// Every Prometheus datasource reference uses uid "prometheus".
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ds, ok := v["datasource"].(map[string]any); ok && ds["type"] == "prometheus" && ds["uid"] != "prometheus" {
				t.Errorf("datasource uid = %v, want prometheus", ds["uid"])
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(dash)
}

func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		Datasources []struct {
			UID  string `json:"uid"`
			Type string `json:"type"`
			URL  string `json:"url"`
		} `json:"datasources"`
	}
	if err := yaml.Unmarshal(readFile(t, "grafana/provisioning/datasources/prometheus.yml"), &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].UID != "prometheus" || ds.Datasources[0].Type != "prometheus" ||
		ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("datasource provisioning = %+v", ds)
	}
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `json:"path"`
			} `json:"options"`
		} `json:"providers"`
	}
	if err := yaml.Unmarshal(readFile(t, "grafana/provisioning/dashboards/dashboards.yml"), &prov); err != nil {
		t.Fatal(err)
	}
	if len(prov.Providers) != 1 {
		t.Fatalf("dashboard providers = %+v", prov)
	}
	c := loadCompose(t)
	if !contains(c.Services["grafana"].Volumes, "./deploy/grafana/dashboards:"+prov.Providers[0].Options.Path+":ro") {
		t.Errorf("compose does not mount the dashboards at the provider path %s", prov.Providers[0].Options.Path)
	}
}

// ---------------------------------------------------------------- Prometheus

var requiredAlerts = []string{
	"PublisherDown", "PublisherNotReady", "PublisherRestartsHigh", "PublisherEscalations",
	"PublisherMessagesFailing", "PublisherConfirmLatencyHigh", "PublisherConnectionBlocked",
}

func TestPrometheusConfig(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(readFile(t, "prometheus/prometheus.yml"), &cfg); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "publisher" {
			continue
		}
		for _, s := range sc.StaticConfigs {
			found = found || contains(s.Targets, "publisher:9464")
		}
	}
	if !found {
		t.Error(`prometheus.yml: no job "publisher" scraping publisher:9464`)
	}
	if !contains(cfg.RuleFiles, "rules.yml") {
		t.Errorf("prometheus.yml: rule_files = %q, want rules.yml", cfg.RuleFiles)
	}
	for _, f := range cfg.RuleFiles {
		if _, err := os.Stat(filepath.Join("prometheus", f)); err != nil {
			t.Errorf("rule file %s (relative to prometheus.yml): %v", f, err)
		}
	}
}

func TestAlertRules(t *testing.T) {
	// The names in the rules' expressions are checked against the real
	// /metrics by way of rules_test.yml (cmd/publisher's
	// TestRuleTestsUseExposedSeries; promtool test rules in TestPromtool).
	b := readFile(t, "prometheus/rules.yml")
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `json:"alert"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("%s: severity label = %q", r.Alert, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
		}
	}
	for _, a := range requiredAlerts {
		if !alerts[a] {
			t.Errorf("rules.yml: alert %s missing", a)
		}
	}

	// rules_test.yml tests every alert both firing and not firing.
	var rt struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(readFile(t, "prometheus/rules_test.yml"), &rt); err != nil {
		t.Fatal(err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for a := range alerts {
		if !firing[a] || !quiet[a] {
			t.Errorf("rules_test.yml: alert %s is not tested both firing (%v) and not firing (%v)", a, firing[a], quiet[a])
		}
	}
}

// TestPromtool runs promtool on the Prometheus files. Under CI=true a missing
// promtool is a failure, never a skip.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool not found (CI=true requires it; apt-get install prometheus): %v", err)
		}
		t.Skipf("promtool not found, skipping (install the Debian package prometheus): %v", err)
	}
	for _, args := range [][]string{
		{"check", "config", "prometheus/prometheus.yml"},
		{"check", "rules", "prometheus/rules.yml"},
		{"test", "rules", "prometheus/rules_test.yml"},
	} {
		t.Run(strings.Join(args[:2], "_"), func(t *testing.T) {
			cmd := exec.Command(promtool, args...)
			out, err := cmd.CombinedOutput()
			var exitErr *exec.ExitError
			if err != nil {
				if errors.As(err, &exitErr) {
					t.Fatalf("promtool %s: exit %d\n%s", strings.Join(args, " "), exitErr.ExitCode(), out)
				}
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
		})
	}
}
