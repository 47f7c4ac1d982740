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
// takes no lock.
type recorder struct {
	w         window
	lat       []time.Duration // of the successes that ended inside the window
	okTotal   int64           // successes over the whole mode, warm-up included
	errs      int64           // failures over the whole mode, warm-up included
	lastError string
}

func newRecorder(w window) *recorder {
	return &recorder{w: w, lat: make([]time.Duration, 0, 4096)}
}

func (r *recorder) record(begin, end time.Time, err error) {
	if err != nil {
		r.errs++
		r.lastError = err.Error()
		return
	}
	r.okTotal++
	if !begin.Before(r.w.measureStart) && end.Before(r.w.measureEnd) {
		r.lat = append(r.lat, end.Sub(begin))
	}
}

// merged is the outcome of all recorders of a mode.
type merged struct {
	lat       []time.Duration
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
				err := op(octx, i)
				end := time.Now()
				cancel()
				rec.record(begin, end, err)
				if err != nil {
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
