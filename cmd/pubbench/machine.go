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

func machineInfo(cfg *config) map[string]string {
	m := map[string]string{
		"cpus":       strconv.Itoa(runtime.NumCPU()),
		"go":         runtime.Version(),
		"goos/arch":  runtime.GOOS + "/" + runtime.GOARCH,
		"gomaxprocs": strconv.Itoa(runtime.GOMAXPROCS(0)),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m["memory"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if u, err := url.Parse(cfg.mgmtURL); err == nil && isLoopbackHost(u.Hostname()) {
		client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
		req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(cfg.mgmtURL, "/")+"/api/overview", nil)
		if resp, err := client.Do(req); err == nil {
			var ov struct {
				RabbitMQ string `json:"rabbitmq_version"`
				Erlang   string `json:"erlang_version"`
			}
			if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&ov) == nil {
				m["rabbitmq"], m["erlang"] = ov.RabbitMQ, ov.Erlang
			}
			resp.Body.Close()
		}
		client.CloseIdleConnections()
	}
	return m
}
