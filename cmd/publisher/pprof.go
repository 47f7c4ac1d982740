//go:build pprof

package main

// Built with -tags pprof, the service serves net/http/pprof on
// $PUBLISHER_PPROF_ADDR (e.g. 127.0.0.1:6060), for profiling under load. It is
// never in a default build: profiles expose internals.

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("PUBLISHER_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
