package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func get(t *testing.T, h http.Handler, method, path string) (int, http.Header, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	b, _ := io.ReadAll(w.Body)
	return w.Code, w.Header(), string(b)
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, s)
	}
	return m
}

func TestAdminMetrics(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewPedanticRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "httpapi_test_events_total", Help: "Test events."})
	reg.MustRegister(c)
	c.Add(3)
	h := NewAdminHandler(AdminConfig{Gatherer: reg})
	code, hdr, body := get(t, h, http.MethodGet, "/metrics")
	if code != 200 || !strings.Contains(body, "httpapi_test_events_total 3") {
		t.Fatalf("status %d: %s", code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	if code, hdr, _ := get(t, h, http.MethodPost, "/metrics"); code != 405 || hdr.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /metrics: %d, Allow %q", code, hdr.Get("Allow"))
	}
}

func TestAdminHealthz(t *testing.T) {
	checkLeaks(t)
	var err error
	h := NewAdminHandler(AdminConfig{Healthy: func() error { return err }})
	code, hdr, body := get(t, h, http.MethodGet, "/healthz")
	if code != 200 || !reflect.DeepEqual(decode(t, body), map[string]any{"status": "ok"}) {
		t.Fatalf("healthy: %d %s", code, body)
	}
	if hdr.Get("Content-Type") != "application/json" || hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", hdr)
	}
	err = errors.New("supervision tree stopped")
	code, _, body = get(t, h, http.MethodGet, "/healthz")
	if code != 503 || !reflect.DeepEqual(decode(t, body), map[string]any{"status": "unhealthy", "error": "supervision tree stopped"}) {
		t.Fatalf("unhealthy: %d %s", code, body)
	}
	if code, _, _ := get(t, h, http.MethodHead, "/healthz"); code != 503 {
		t.Errorf("HEAD: %d", code)
	}
}

func TestAdminReadyz(t *testing.T) {
	checkLeaks(t)
	ready := true
	h := NewAdminHandler(AdminConfig{Ready: func() (bool, map[string]any) {
		return ready, map[string]any{"connected": ready, "blocked": false, "ready": "overridden"}
	}})
	code, _, body := get(t, h, http.MethodGet, "/readyz")
	if code != 200 || !reflect.DeepEqual(decode(t, body), map[string]any{"ready": true, "connected": true, "blocked": false}) {
		t.Fatalf("ready: %d %s", code, body)
	}
	ready = false
	code, _, body = get(t, h, http.MethodGet, "/readyz")
	if code != 503 || !reflect.DeepEqual(decode(t, body), map[string]any{"ready": false, "connected": false, "blocked": false}) {
		t.Fatalf("not ready: %d %s", code, body)
	}
}

func TestAdminDefaults(t *testing.T) {
	checkLeaks(t)
	h := NewAdminHandler(AdminConfig{})
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/nope": 404} {
		code, hdr, body := get(t, h, http.MethodGet, path)
		if code != want {
			t.Errorf("%s: %d, want %d: %s", path, code, want, body)
		}
		if path != "/metrics" && hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s: Content-Type %q", path, hdr.Get("Content-Type"))
		}
	}
	if _, _, body := get(t, h, http.MethodGet, "/readyz"); !reflect.DeepEqual(decode(t, body), map[string]any{"ready": true}) {
		t.Errorf("readyz: %s", body)
	}
}

func TestAdminReadyzUnencodableDetail(t *testing.T) {
	checkLeaks(t)
	h := NewAdminHandler(AdminConfig{Ready: func() (bool, map[string]any) {
		return false, map[string]any{"bad": func() {}}
	}})
	code, _, body := get(t, h, http.MethodGet, "/readyz")
	if m := decode(t, body); code != 503 || m["ready"] != false {
		t.Fatalf("%d %s", code, body)
	}
}
