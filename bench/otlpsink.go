package main

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// otlpSink is the OTLP/HTTP endpoint of mode (h): it takes every export
// request, counts it and throws it away (an empty body with status 200 is a
// valid, successful OTLP answer). Its CPU is pubbench's, as a collector's
// would be another process's.
type otlpSink struct {
	srv      *http.Server
	ln       net.Listener
	requests atomic.Int64
	bytes    atomic.Int64
}

func newOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{ln: ln}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.requests.Add(1)
		s.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})}
	go s.srv.Serve(ln)
	return s, nil
}

// url is the base of the OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT).
func (s *otlpSink) url() string { return "http://" + s.ln.Addr().String() }

func (s *otlpSink) close() { s.srv.Close() }
