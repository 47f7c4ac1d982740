package service

import (
	"errors"
	"time"

	"github.com/publisher-dev/publisher/publisher"
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
func (s *Service) degraded() bool {
	g := s.givenUp.Load()
	return g != 0 && g-1 == s.pub.State().Connects
}

// ready: connected, all confirm channels open, not blocked, not draining,
// not given up; with a spool: the spool accepts, whatever the broker does.
func (s *Service) ready() bool {
	if s.draining.Load() {
		return false
	}
	if s.relay != nil {
		return s.relay.Accepting()
	}
	return !s.degraded() && s.pub.Ready()
}

// readyDetail is /readyz's answer.
func (s *Service) readyDetail() (bool, map[string]any) {
	st := s.pub.State()
	d := map[string]any{
		"connected": st.Connected,
		"blocked":   st.Blocked,
		"channels":  st.Channels,
		"inflight":  st.Inflight,
		"buffered":  st.Buffered,
		"broker":    st.URL,
		"broker_up": st.Connected && !st.Blocked,
		"draining":  s.draining.Load(),
		"given_up":  s.degraded(),
	}
	if s.spool != nil {
		st := s.spool.Status()
		d["spool_messages"], d["spool_bytes"], d["spool_accepting"] = st.Messages, st.Bytes, st.Accepting
		if !st.Accepting {
			d["spool_error"] = st.Err.Error()
			d["spool_since"] = st.Since.UTC().Format(time.RFC3339)
		}
	}
	return s.ready(), d
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
