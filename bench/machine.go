package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machineInfo describes the machine and, when the management API is on
// loopback, the broker's versions.
func machineInfo(cfg *config) map[string]string {
	m := map[string]string{
		"cpus":       strconv.Itoa(runtime.NumCPU()),
		"go":         runtime.Version(),
		"goos/arch":  runtime.GOOS + "/" + runtime.GOARCH,
		"gomaxprocs": strconv.Itoa(runtime.GOMAXPROCS(0)),
	}
	if v, ok := procInfoField("/proc/cpuinfo", "model name"); ok {
		m["cpu"] = v
	}
	if v, ok := procInfoField("/proc/meminfo", "MemTotal"); ok {
		m["memory"] = v
	}
	if u, err := url.Parse(cfg.mgmtURL); err == nil && isLoopbackHost(u.Hostname()) {
		if rabbitmq, erlang, ok := brokerVersions(cfg.mgmtURL); ok {
			m["rabbitmq"], m["erlang"] = rabbitmq, erlang
		}
	}
	return m
}

// procInfoField returns the value of the first "key: value" line of a /proc
// file such as /proc/cpuinfo (the key trimmed of blanks).
func procInfoField(path, key string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// brokerVersions asks the management API's /api/overview for the RabbitMQ
// and Erlang versions.
func brokerVersions(mgmtURL string) (rabbitmq, erlang string, ok bool) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(mgmtURL, "/")+"/api/overview", nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", "", false
	}
	defer resp.Body.Close()
	var ov struct {
		RabbitMQ string `json:"rabbitmq_version"`
		Erlang   string `json:"erlang_version"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ov) != nil {
		return "", "", false
	}
	return ov.RabbitMQ, ov.Erlang, true
}
