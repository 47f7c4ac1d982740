package spool

import (
	"errors"
	"fmt"
	"time"
)

const (
	// minSegmentBytes is the floor of the bound and free-space clamps of
	// segmentSize.
	minSegmentBytes = 256 << 10
	// retryMin and retryMax bound the backoff of the writer's retries: the
	// k-th consecutive failed attempt is retried after
	// min(retryMin * 2^(k-1), retryMax).
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
	// spacePoll is how often the writer looks at the free space while the
	// volume is full (a statfs; a segment is created only once it fits).
	spacePoll = 250 * time.Millisecond
)

// Status is a snapshot of the spool's state (see Spool.Status).
type Status struct {
	// Accepting tells whether Append takes records now.
	Accepting bool
	// Err is nil when accepting; else it matches ErrFull (the bound was
	// reached, or the volume is full: then it also matches ErrNoSpace) or
	// ErrDisk (failing, being retried), or is ErrClosed after Close.
	Err error
	// Since is when the current non-accepting state began (zero when
	// accepting).
	Since time.Time
	// Messages and Bytes are the durable, unacknowledged records (as Stats).
	Messages int
	Bytes    int64
	// SegmentBytes is the segment size in use: what the sizing rule gave
	// at the last segment creation or attempt (a record larger than that
	// gets a segment of its own size), or the size of the newest segment
	// reused at Open.
	SegmentBytes int64
}

// Status returns the spool's state. It only takes a mutex: cheap enough for
// every request. Right after Open it already tells whether the spool could
// create its active segment.
func (s *Spool) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Messages: s.live, Bytes: s.liveBytes, SegmentBytes: s.segBytes}
	switch {
	case s.closed:
		st.Err = ErrClosed
	case s.diskErr != nil:
		st.Err, st.Since = s.diskErr, s.diskSince
	case !s.boundSince.IsZero():
		st.Err, st.Since = ErrFull, s.boundSince
	default:
		st.Accepting = true
	}
	return st
}

// Healthy returns nil unless the spool cannot recover by itself: it has been
// failing (ErrDisk) continuously for longer than Options.UnhealthyAfter, or
// out of space while holding no live record for longer than that. Being
// full of its own unconfirmed records, or at its bound, is healthy.
func (s *Spool) Healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.diskErr == nil {
		return nil
	}
	since := s.diskSince
	if errors.Is(s.diskErr, ErrNoSpace) {
		if s.live > 0 {
			return nil
		}
		if s.idleSince.After(since) {
			since = s.idleSince
		}
	}
	if d := s.now().Sub(since); d > s.opts.UnhealthyAfter {
		return fmt.Errorf("spool: not accepting for %v, holding %d records: %w", d.Round(time.Millisecond), s.live, s.diskErr)
	}
	return nil
}

// segmentSize returns the size of a new segment (before a larger record
// raises it), for a volume with free bytes free (negative: unknown, not
// clamped):
//
//	size = min(SegmentBytes, max(min(MaxBytes/8, free/8), min(256 KiB, MaxBytes/2)))
func (s *Spool) segmentSize(free int64) int64 {
	c := s.opts.MaxBytes / 8
	if free >= 0 {
		c = min(c, free/8)
	}
	floor := min(minSegmentBytes, s.opts.MaxBytes/2)
	return max(min(s.opts.SegmentBytes, max(c, floor)), headerSize)
}

// freeBytes returns the free bytes of the spool's volume, -1 if unknown.
func (s *Spool) freeBytes() int64 {
	n, err := s.fs.FreeBytes(s.dir)
	if err != nil {
		return -1
	}
	return n
}

// diskFailed puts the spool into the full or failing state after cause
// (creating, writing or fsyncing a segment failed), or keeps it there, and
// schedules the next retry (writer goroutine, or Open before it starts).
// The state change is logged once.
func (s *Spool) diskFailed(cause error) {
	kind := ErrDisk
	if isNoSpace(cause) {
		kind = ErrNoSpace
	}
	err := fmt.Errorf("%w: %w", kind, cause)
	s.mu.Lock()
	prev := s.diskErr
	s.diskErr = err
	if prev == nil {
		s.diskSince = s.now()
		s.diskRefused = 0
	}
	live := s.live
	s.mu.Unlock()
	if s.backoff == 0 {
		s.backoff = retryMin
	} else {
		s.backoff = min(2*s.backoff, retryMax)
	}
	s.retryC = s.after(s.backoff)
	switch {
	case prev != nil && errors.Is(prev, kind):
		s.log.Debug("spool: retry failed", "err", cause, "next_retry", s.backoff)
	case kind == ErrNoSpace:
		s.log.Warn("spool out of disk space; refusing appends until space is free", "err", cause, "free_bytes", s.freeBytes(), "messages", live)
	default:
		s.log.Error("spool disk failure; refusing appends and retrying", "err", cause, "next_retry", s.backoff)
	}
}

// retry runs in the writer while the spool does not accept: when the retry
// timer fired, or (kicked) when the cleaner freed space. On a full volume
// it first looks at the free space and creates a segment only if it fits;
// a kick does not cut short the backoff of a failing disk.
func (s *Spool) retry(kicked bool) {
	if s.diskErr == nil {
		return
	}
	noSpace := errors.Is(s.diskErr, ErrNoSpace)
	if kicked && !noSpace {
		return
	}
	if noSpace {
		if free := s.freeBytes(); free >= 0 && free < s.segmentSize(free) {
			s.retryC = s.after(spacePoll)
			return
		}
	}
	if err := s.newSegment(0, true); err != nil {
		s.diskFailed(err)
		return
	}
	s.mu.Lock()
	since, refused, prev := s.diskSince, s.diskRefused, s.diskErr
	s.diskErr, s.diskSince, s.diskRefused = nil, time.Time{}, 0
	s.mu.Unlock()
	s.backoff, s.retryC = 0, nil
	s.log.Info("spool accepting again", "after", s.now().Sub(since).Round(time.Millisecond), "refused_appends", refused, "was", prev)
}

// boundEndLocked ends a full-for-the-bound episode once the reserved bytes
// are back at or below 7/8 of MaxBytes (under mu); the returned function
// logs that, after mu is released.
func (s *Spool) boundEndLocked() func() {
	if s.boundSince.IsZero() || s.reserved > s.opts.MaxBytes-s.opts.MaxBytes/8 {
		return func() {}
	}
	d, n := s.now().Sub(s.boundSince), s.boundRefused
	s.boundSince, s.boundRefused = time.Time{}, 0
	return func() {
		s.log.Info("spool accepting again: below its bound", "after", d.Round(time.Millisecond), "refused_appends", n)
	}
}
