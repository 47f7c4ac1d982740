package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/publisher-dev/publisher/supervision"
)

// AdminConfig configures NewAdminHandler. Nil fields mean the documented
// defaults.
type AdminConfig struct {
	// Gatherer is served on /metrics; nil means prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Healthy is liveness (the supervision tree is alive); nil means always
	// healthy.
	Healthy func() error
	// Ready is readiness; detail is merged into the JSON answer beside "ready"
	// (a "ready" key in detail is overridden). nil means always ready.
	Ready func() (ready bool, detail map[string]any)
	// Tree is the supervision tree's snapshot, served on /debug/supervision
	// with Ready's answer; nil: that path answers 404.
	Tree func() supervision.SupervisorInfo
	// RedactError makes the text /debug/supervision shows for a child's
	// last failure; nil means err.Error(). Whatever it returns is shown to
	// anyone who reaches the admin listener: it must mask secrets.
	RedactError func(error) string
}

// NewAdminHandler returns the admin listener's handler:
//
//	GET /metrics  Prometheus exposition of cfg.Gatherer (a failing collector
//	              does not fail the scrape: what could be gathered is served and
//	              the error is logged by promhttp)
//	GET /healthz  200 {"status":"ok"} or 503 {"status":"unhealthy","error":"..."}
//	GET /readyz   200 or 503 {"ready":bool, ...detail}
//	GET /debug/supervision
//	              the live supervision tree (each node's state, restart type,
//	              restart statistics, last failure, next restart) and the
//	              service's state (Ready's answer): JSON (TreeAnswer) when the
//	              Accept header prefers application/json to text/html, else
//	              one self-contained HTML page that reloads itself every 2 s
//	              (no script, nothing loaded from elsewhere)
//
// HEAD is accepted wherever GET is; other methods get 405 JSON with
// "Allow: GET, HEAD", other paths 404 JSON. Health answers are not cached
// (Cache-Control: no-store).
func NewAdminHandler(cfg AdminConfig) http.Handler {
	g := cfg.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	metrics := promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	})
	mux := http.NewServeMux()
	mux.Handle("/metrics", getOnly(metrics))
	mux.Handle("/healthz", getOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cfg.Healthy != nil {
			if err := cfg.Healthy(); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unhealthy", "error": err.Error()}, nil)
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"}, nil)
	})))
	mux.Handle("/readyz", getOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ready, detail := true, map[string]any(nil)
		if cfg.Ready != nil {
			ready, detail = cfg.Ready()
		}
		out := make(map[string]any, len(detail)+1)
		for k, v := range detail {
			out[k] = v
		}
		out["ready"] = ready
		code := http.StatusOK
		if !ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, out, map[string]any{"ready": ready, "error": "detail cannot be encoded as JSON"})
	})))
	notFound := "not found: use /metrics, /healthz or /readyz"
	if cfg.Tree != nil {
		redact := cfg.RedactError
		if redact == nil {
			redact = func(err error) string { return err.Error() }
		}
		mux.Handle("/debug/supervision", getOnly(treeHandler{tree: cfg.Tree, redact: redact, ready: cfg.Ready, now: time.Now}))
		notFound = "not found: use /metrics, /healthz, /readyz or /debug/supervision"
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, notFound, "")
	})
	return mux
}

// getOnly answers methods other than GET and HEAD with 405.
func getOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header()["Allow"] = []string{"GET, HEAD"}
			writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed: use GET", "")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// writeJSON writes v as the JSON answer, or fallback (which must encode) when v
// cannot be encoded; the status stays code either way.
func writeJSON(w http.ResponseWriter, code int, v, fallback any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(fallback)
	}
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType[:1:1]
	hdr["X-Content-Type-Options"] = noSniff[:1:1]
	hdr["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
