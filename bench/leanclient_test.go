package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestLeanConn checks the lean client against net/http's server: the request
// arrives whole, answers with Content-Length are read on one connection, and
// "Connection: close", chunked answers and a dead server are handled.
func TestLeanConn(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/publish/amq.default/q" || r.Header.Get("X-Persistent") != "false" {
			http.Error(w, "bad request line or header", http.StatusBadRequest)
			return
		}
		switch string(body) {
		case "close":
			w.Header().Set("Connection", "close")
		case "chunked":
			w.(http.Flusher).Flush() // forces chunked encoding
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"confirmed","body":%q}`, body)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	ctx := context.Background()
	h := http.Header{"X-Persistent": {"false"}}

	c, err := newLeanConn(srv.URL+"/v1/publish/amq.default/q", h, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for i := range 3 {
		code, body, err := c.do(ctx)
		if err != nil || code != 200 || string(body) != `{"status":"confirmed","body":"hello"}` {
			t.Fatalf("request %d: %d %q %v", i, code, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("3 keep-alive requests used %d connections, want 1", n)
	}

	for _, b := range []string{"close", "chunked"} {
		c, err := newLeanConn(srv.URL+"/v1/publish/amq.default/q", h, []byte(b))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			code, body, err := c.do(ctx)
			if err != nil || code != 200 || !strings.Contains(string(body), `"body":"`+b+`"`) {
				t.Fatalf("%s, request %d: %d %q %v", b, i, code, body, err)
			}
		}
		c.close()
	}

	bad, _ := newLeanConn(srv.URL+"/other", nil, nil)
	if code, _, err := bad.do(ctx); err != nil || code != 400 {
		t.Errorf("bad request: %d %v, want 400", code, err)
	}
	bad.close()

	if _, err := newLeanConn("https://example.com/", nil, nil); err == nil {
		t.Error("https URL accepted")
	}
	srv.Close()
	if _, _, err := c.do(ctx); err == nil {
		t.Error("no error from a closed server")
	}
}
