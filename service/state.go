package service

import (
	"errors"
	"time"

	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/spool"
)

// accepting gates new publishes (503 when it returns an error).
func (s *Service) accepting() error {
	if s.draining.Load() {
		return publisher.ErrClosed
	}
	if s.relay != nil {
		return nil // the spool decides (503 when full or failing)
	}
	if s.degraded() {
		return errGivenUp
	}
	return nil
}

// degraded reports whether the tree has given up on the broker (see
// rootDecider) and no connection was made since. It only reads: the state
// ends by itself with the publisher's next connection.
func (s *Service) degraded() bool { return s.degradedAt(s.pub.State()) }

// degradedAt is degraded on the publisher's state st.
func (s *Service) degradedAt(st publisher.State) bool {
	g := s.givenUp.Load()
	return g != 0 && g-1 == st.Connects
}

// readiness is the readiness rule on one reading of its inputs: not draining
// and, with a spool, the spool accepts, whatever the broker does; without one,
// not given up and the publisher connected, not blocked, every confirm channel
// open (publisher.Ready's test, applied to st rather than to a second read).
// /readyz and a scrape of /metrics each read the state once and derive
// everything from that reading, so their fields never disagree (connected
// false beside ready true).
func (s *Service) readiness(draining bool, st publisher.State, sp spool.Status) bool {
	if draining {
		return false
	}
	if s.relay != nil {
		return sp.Accepting
	}
	return !s.degradedAt(st) && st.Connected && !st.Blocked && st.Channels == s.cfg.Channels
}

// readyAt is readiness with st as the publisher's state (the metrics'
// publisher_ready, computed from the scrape's snapshot).
func (s *Service) readyAt(st publisher.State) bool {
	return s.readiness(s.draining.Load(), st, s.spoolStatus())
}

// readyDetail is /readyz's answer, from one read of each piece of state.
func (s *Service) readyDetail() (bool, map[string]any) {
	st, draining, sp := s.pub.State(), s.draining.Load(), s.spoolStatus()
	d := map[string]any{
		"connected": st.Connected,
		"blocked":   st.Blocked,
		"channels":  st.Channels,
		"inflight":  st.Inflight,
		"buffered":  st.Buffered,
		"broker":    st.URL,
		"broker_up": st.Connected && !st.Blocked,
		"draining":  draining,
		"given_up":  s.degradedAt(st),
	}
	if s.spool != nil {
		d["spool_messages"], d["spool_bytes"], d["spool_accepting"] = sp.Messages, sp.Bytes, sp.Accepting
		if !sp.Accepting {
			d["spool_error"] = sp.Err.Error()
			d["spool_since"] = sp.Since.UTC().Format(time.RFC3339)
		}
	}
	return s.readiness(draining, st, sp), d
}

// healthy is liveness: the supervision tree runs, and the spool (if any) is
// not stuck in a state it cannot leave by itself (spool.Healthy): a restart of
// the container is the remedy then.
func (s *Service) healthy() error {
	if !s.treeAlive.Load() {
		return errors.New("supervision tree stopped")
	}
	if s.spool != nil {
		return s.spool.Healthy()
	}
	return nil
}
