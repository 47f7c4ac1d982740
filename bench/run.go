package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// window is the timing of one mode: results count only what completes between
// measureStart and measureEnd; nothing new starts after measureEnd.
type window struct {
	start, measureStart, measureEnd time.Time
}

func newWindow(warmup, duration time.Duration) window {
	now := time.Now()
	return window{start: now, measureStart: now.Add(warmup), measureEnd: now.Add(warmup + duration)}
}

// recorder collects one worker's outcomes; each worker owns one, so recording
// takes no lock. An operation is one message in most modes, a request of
// many in mode batch: measured counts messages, lat has one sample per
// operation.
type recorder struct {
	w         window
	lat       []time.Duration // of the operations that succeeded and ended inside the window
	measured  int             // confirmed messages of those operations
	okTotal   int64           // confirmed messages over the whole mode, warm-up included
	errs      int64           // failed messages over the whole mode, warm-up included
	lastError string
}

func newRecorder(w window) *recorder {
	return &recorder{w: w, lat: make([]time.Duration, 0, 4096)}
}

// record records an operation of one message.
func (r *recorder) record(begin, end time.Time, err error) {
	if err != nil {
		r.fail(1, err)
		return
	}
	r.recordN(begin, end, 1)
}

// recordN records an operation from begin to end that had n messages
// confirmed (n > 0): one latency sample when it began and ended inside the
// window, and n messages.
func (r *recorder) recordN(begin, end time.Time, n int) {
	if n <= 0 {
		return
	}
	r.okTotal += int64(n)
	if !begin.Before(r.w.measureStart) && end.Before(r.w.measureEnd) {
		r.lat = append(r.lat, end.Sub(begin))
		r.measured += n
	}
}

// fail records n failed messages (n > 0), err saying why.
func (r *recorder) fail(n int, err error) {
	if n <= 0 {
		return
	}
	r.errs += int64(n)
	if err != nil {
		r.lastError = err.Error()
	}
}

// merged is the outcome of all recorders of a mode.
type merged struct {
	lat       []time.Duration
	measured  int
	okTotal   int64
	errs      int64
	lastError string
}

func merge(rs []*recorder) merged {
	var m merged
	n := 0
	for _, r := range rs {
		n += len(r.lat)
	}
	m.lat = make([]time.Duration, 0, n)
	for _, r := range rs {
		m.lat = append(m.lat, r.lat...)
		m.measured += r.measured
		m.okTotal += r.okTotal
		m.errs += r.errs
		if r.lastError != "" {
			m.lastError = r.lastError
		}
	}
	return m
}

// runClosedLoop runs c workers, each calling op back to back until the
// window's end (or ctx is done), and returns their merged outcome. op gets a
// context bounded by opTimeout. After a failure a worker pauses briefly, so a
// broken target does not turn into a busy loop.
func runClosedLoop(ctx context.Context, w window, c int, opTimeout time.Duration, op func(ctx context.Context, worker int) error) merged {
	return runClosedLoopN(ctx, w, c, opTimeout, func(ctx context.Context, worker int) (int, int, error) {
		if err := op(ctx, worker); err != nil {
			return 0, 1, err
		}
		return 1, 0, nil
	})
}

// runClosedLoopN is runClosedLoop for operations of several messages: op
// returns how many were confirmed and how many failed, and err saying why
// when any failed. A worker pauses after an operation that confirmed none.
func runClosedLoopN(ctx context.Context, w window, c int, opTimeout time.Duration, op func(ctx context.Context, worker int) (ok, failed int, err error)) merged {
	rs := make([]*recorder, c)
	var wg sync.WaitGroup
	for i := range c {
		rs[i] = newRecorder(w)
		wg.Add(1)
		go func(i int, rec *recorder) {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(w.measureEnd) {
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				begin := time.Now()
				ok, failed, err := op(octx, i)
				end := time.Now()
				cancel()
				rec.recordN(begin, end, ok)
				rec.fail(failed, err)
				if ok == 0 {
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		}(i, rs[i])
	}
	wg.Wait()
	return merge(rs)
}

// errCounter counts concurrent failures where a recorder per goroutine is not
// practical.
type errCounter struct {
	n    atomic.Int64
	mu   sync.Mutex
	last string
}

func (e *errCounter) add(err error) {
	e.n.Add(1)
	e.mu.Lock()
	e.last = err.Error()
	e.mu.Unlock()
}
