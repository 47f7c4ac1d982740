package service

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/publisher-dev/publisher/internal/promtext"
	"github.com/publisher-dev/publisher/publisher"
)

// flappingBroker is a connected fakeBroker whose state changes at every read:
// connected on odd reads, not on even ones, as a connection that comes and
// goes between two reads of one answer.
type flappingBroker struct {
	*fakeBroker
	reads atomic.Uint64
}

func (f *flappingBroker) State() publisher.State {
	n := f.reads.Add(1)
	st := publisher.State{Connected: n%2 == 1, Connects: 1}
	if st.Connected {
		st.Channels = 1
	}
	return st
}

func (f *flappingBroker) Ready() bool { return f.State().Connected }

// /readyz and one scrape of /metrics each derive readiness from the one state
// they report: ready exactly when connected (the fake is never blocked), at
// every read, however the state flaps between reads.
func TestReadinessAndGaugesFromOneSnapshot(t *testing.T) {
	f := &flappingBroker{fakeBroker: &fakeBroker{}}
	cfg := testConfig()
	s, err := newService(cfg, Options{Logger: discard()}, func(publisher.Config) (broker, error) { return f, nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Service: s, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	defer func() {
		if err, _ := r.stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	const reads = 20 // both parities many times over: each read flips the state
	for i := range reads {
		code, body := r.get("/readyz")
		if connected := body["connected"] == true; connected != (code == 200) {
			t.Fatalf("read %d: /readyz %d with connected=%v", i, code, body["connected"])
		}
		samples, err := promtext.Parse(strings.NewReader(r.metricsText()))
		if err != nil {
			t.Fatal(err)
		}
		up, ok1 := samples.Sum("publisher_connection_up")
		ready, ok2 := samples.Sum("publisher_ready")
		if !ok1 || !ok2 {
			t.Fatalf("scrape %d lacks publisher_connection_up or publisher_ready", i)
		}
		if up != ready {
			t.Fatalf("scrape %d: publisher_connection_up %v beside publisher_ready %v", i, up, ready)
		}
	}
}
