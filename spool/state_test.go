package spool

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/internal/syncbuf"
)

// fakeClock is the writer's clock in tests: its timers fire only on Advance.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	timers []fakeTimer
	waits  []time.Duration // every After duration, in order
}

type fakeTimer struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, fakeTimer{at: c.t.Add(d), c: ch})
	return ch
}

// next waits until a timer is pending and returns when it is due.
func (c *fakeClock) next(t *testing.T) time.Time {
	t.Helper()
	var at time.Time
	poll.Within(t, waitLimit, "a timer", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.timers) == 0 {
			return false
		}
		at = c.timers[0].at
		return true
	})
	return at
}

// advanceTo moves the clock to at, firing the timers due.
func (c *fakeClock) advanceTo(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = at
	keep := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at.After(at) {
			keep = append(keep, tm)
			continue
		}
		tm.c <- at
	}
	c.timers = keep
}

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// logBuf collects JSON log lines.
type logBuf struct{ syncbuf.Buffer }

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// lines returns the lines whose message is msg.
func (l *logBuf) lines(msg string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, `"msg":"`+msg+`"`) {
			out = append(out, line)
		}
	}
	return out
}

// An fsync failing with EIO: the spool fails (ErrDisk), refuses appends at
// once without touching the disk, retries in the background with a bounded
// backoff, turns unhealthy after UnhealthyAfter, and accepts again by itself
// once the disk works. The state changes are logged once each.
func TestFailingRetriesWithBackoff(t *testing.T) {
	noLeaks(t)
	ffs := newFaultFS()
	clk := newFakeClock()
	var logs logBuf
	s := open(t, t.TempDir(), Options{FS: ffs, SegmentBytes: 8192, UnhealthyAfter: 30 * time.Second,
		Logger: logs.logger(), now: clk.Now, after: clk.After})
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Append(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	ffs.failSync.Store(true)
	if _, err := s.Append(ctx, []byte("lost")); !errors.Is(err, ErrDisk) {
		t.Fatalf("Append with a failing fsync: %v", err)
	}
	start := clk.Now()
	st := s.Status()
	if st.Accepting || !errors.Is(st.Err, ErrDisk) || errors.Is(st.Err, ErrFull) || !st.Since.Equal(start) || st.Messages != 1 {
		t.Fatalf("Status while failing: %+v", st)
	}
	// Refused at once, no disk I/O per request.
	clk.next(t) // the first retry is scheduled
	ops := ffs.segOps.Load()
	for range 100 {
		if _, err := s.Append(ctx, []byte("refused")); !errors.Is(err, ErrDisk) {
			t.Fatalf("Append while failing: %v", err)
		}
	}
	if n := ffs.segOps.Load() - ops; n != 0 {
		t.Fatalf("%d segment file operations for 100 refused appends", n)
	}
	// 60 s of a broken disk, on the fake clock.
	attempts := 0
	for {
		at := clk.next(t)
		if at.Sub(start) > time.Minute {
			break
		}
		if err := s.Healthy(); (err != nil) != (clk.Now().Sub(start) > 30*time.Second) {
			t.Fatalf("after %v failing: Healthy() = %v", clk.Now().Sub(start), err)
		}
		n := len(clk.Waits())
		clk.advanceTo(at)
		attempts++
		poll.Within(t, waitLimit, "the retry to fail", func() bool { return len(clk.Waits()) > n })
	}
	waits := clk.Waits()
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000}
	for i, w := range want {
		if waits[i] != w*time.Millisecond {
			t.Fatalf("retry delays %v, want %v...", waits, want)
		}
	}
	t.Logf("%d retries in a minute: %v", attempts, waits)
	if attempts > 20 {
		t.Fatalf("%d retries in a minute", attempts)
	}
	if err := s.Healthy(); err == nil || !errors.Is(err, ErrDisk) {
		t.Fatalf("Healthy() after a minute failing = %v", err)
	}
	// The disk works again: the next retry recovers, with no Append.
	ffs.failSync.Store(false)
	clk.advanceTo(clk.next(t))
	poll.Within(t, waitLimit, "accepting again", func() bool { return s.Status().Accepting })
	if err := s.Healthy(); err != nil {
		t.Fatalf("Healthy() when accepting: %v", err)
	}
	if _, err := s.Append(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, s); len(got) != 2 || string(got[0].Data) != "before" || string(got[1].Data) != "after" {
		t.Fatalf("records: %v", got)
	}
	fails, backs := logs.lines("spool disk failure; refusing appends and retrying"), logs.lines("spool accepting again")
	if len(fails) != 1 || len(backs) != 1 || !strings.Contains(backs[0], `"refused_appends":100`) {
		t.Fatalf("state-change logs: %q %q", fails, backs)
	}
}

// ENOSPC writing the active segment: the spool is full (ErrNoSpace, which
// is ErrFull and not ErrDisk), healthy while it holds records, and accepts
// again by itself, without an Append, once the volume has space.
func TestNoSpaceOnWriteRecoversByItself(t *testing.T) {
	noLeaks(t)
	ffs := newFaultFS()
	s := open(t, t.TempDir(), Options{FS: ffs, SegmentBytes: 8192, UnhealthyAfter: time.Nanosecond})
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Append(ctx, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	ffs.enospc.Store(true)
	_, err := s.Append(ctx, []byte("refused"))
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, ErrFull) || errors.Is(err, ErrDisk) {
		t.Fatalf("Append on a full volume: %v", err)
	}
	if st := s.Status(); st.Accepting || !errors.Is(st.Err, ErrNoSpace) {
		t.Fatalf("Status: %+v", st)
	}
	time.Sleep(10 * time.Millisecond)
	if err := s.Healthy(); err != nil {
		t.Fatalf("full of its own records, Healthy() = %v", err)
	}
	ffs.enospc.Store(false) // something else freed the disk
	poll.Within(t, waitLimit, "accepting again", func() bool { return s.Status().Accepting })
	if _, err := s.Append(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
}

// A small volume (the fake quota): appends succeed until the volume is full,
// then fail with ErrNoSpace; once the consumer acknowledged everything the
// spool reclaims every segment and accepts again by itself. With a lying
// statfs the segment creations really run out of space half-way: their
// partial files are removed.
func TestNoSpaceVolumeFreedByAcks(t *testing.T) {
	noLeaks(t)
	for _, lie := range []bool{false, true} {
		t.Run(map[bool]string{false: "statfs", true: "lying-statfs"}[lie], func(t *testing.T) {
			dir := t.TempDir()
			ffs := newFaultFS()
			ffs.quota, ffs.quotaDir = 512<<10, dir
			if lie {
				ffs.lie = 1 << 20
			}
			var logs logBuf
			s := open(t, dir, Options{FS: ffs, SegmentBytes: 64 << 10, Logger: logs.logger()})
			defer s.Close()
			ctx := context.Background()
			data := bytes.Repeat([]byte{'d'}, 1000)
			var seqs []uint64
			var err error
			for {
				var seq uint64
				if seq, err = s.Append(ctx, data); err != nil {
					break
				}
				seqs = append(seqs, seq)
			}
			if !errors.Is(err, ErrNoSpace) || !errors.Is(err, ErrFull) {
				t.Fatalf("Append on a full volume: %v", err)
			}
			stored := int64(len(seqs)) * int64(len(data)+headerSize)
			t.Logf("%d records (%d bytes) on a %d-byte volume", len(seqs), stored, ffs.quota)
			if stored < ffs.quota*3/4 {
				t.Fatalf("only %d bytes stored on a %d-byte volume", stored, ffs.quota)
			}
			for range 50 {
				if _, err := s.Append(ctx, data); !errors.Is(err, ErrNoSpace) {
					t.Fatalf("Append while full: %v", err)
				}
			}
			if st := s.Status(); st.Accepting || !errors.Is(st.Err, ErrNoSpace) || st.Messages != len(seqs) {
				t.Fatalf("Status: %+v", st)
			}
			got := drain(t, s)
			if len(got) != len(seqs) {
				t.Fatalf("drained %d records, appended %d", len(got), len(seqs))
			}
			for i, r := range got {
				if r.Seq != seqs[i] || !bytes.Equal(r.Data, data) {
					t.Fatalf("record %d: seq %d", i, r.Seq)
				}
				s.Ack(r.Seq)
			}
			poll.Within(t, waitLimit, "accepting again", func() bool { return s.Status().Accepting })
			poll.Within(t, waitLimit, "no leftover", func() bool { return len(leftovers(t, dir)) == 0 })
			if _, err := s.Append(ctx, data); err != nil {
				t.Fatal(err)
			}
			if n := len(logs.lines("spool out of disk space; refusing appends until space is free")); n != 1 {
				t.Fatalf("%d 'out of space' log lines", n)
			}
			s.Close()
			if l := leftovers(t, dir); len(l) != 0 {
				t.Fatalf("leftovers after Close: %v", l)
			}
			if _, err := os.Stat(filepath.Join(dir, spareName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("spare after Close: %v", err)
			}
		})
	}
}

// leftovers lists what a spool directory without live records should not
// hold: partial files, salvages, markers, more than the one active segment.
// (A spare is the spool's own while it is open: check after Close.)
func leftovers(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	segs := 0
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, segSuffix):
			segs++
			if segs > 1 {
				out = append(out, name)
			}
		case name == watermarkName || name == deadLetterName:
		case name == spareName: // the spool's own, while open
		default:
			out = append(out, name)
		}
	}
	return out
}

// Out of space with no record of its own (something else filled the
// volume): Status says so right after Open, Healthy turns non-nil after
// UnhealthyAfter, and all is well again once the space is back.
func TestUnhealthyWhenOutOfSpaceWithoutRecords(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	hog := filepath.Join(dir, "hog")
	if err := os.WriteFile(hog, make([]byte, 500<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	ffs := newFaultFS()
	ffs.quota, ffs.quotaDir = 512<<10, dir
	clk := newFakeClock()
	s := open(t, dir, Options{FS: ffs, SegmentBytes: 64 << 10, UnhealthyAfter: 30 * time.Second, now: clk.Now, after: clk.After})
	defer s.Close()
	st := s.Status()
	if st.Accepting || !errors.Is(st.Err, ErrNoSpace) {
		t.Fatalf("Status right after Open on a full volume: %+v", st)
	}
	if _, err := s.Append(context.Background(), []byte("x")); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Append: %v", err)
	}
	start := clk.Now()
	for clk.Now().Sub(start) <= 30*time.Second {
		if err := s.Healthy(); err != nil {
			t.Fatalf("after %v: Healthy() = %v", clk.Now().Sub(start), err)
		}
		n := len(clk.Waits())
		clk.advanceTo(clk.next(t))
		poll.Within(t, waitLimit, "the writer to look again", func() bool { return len(clk.Waits()) > n })
	}
	if err := s.Healthy(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("out of space without records for %v: Healthy() = %v", clk.Now().Sub(start), err)
	}
	if n := len(leftovers(t, dir)); n != 1 { // the hog
		t.Fatalf("leftovers: %v", leftovers(t, dir))
	}
	os.Remove(hog)
	clk.advanceTo(clk.next(t))
	poll.Within(t, waitLimit, "accepting", func() bool { return s.Status().Accepting })
	if err := s.Healthy(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(context.Background(), []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// The segment size follows the bound and the free space, and the active
// segment and the spare never take more than they allow; a record larger
// than a segment gets one of its own size.
func TestSegmentSizing(t *testing.T) {
	noLeaks(t)
	cases := []struct {
		name     string
		free     int64 // 0: the real volume
		opts     Options
		want     int64
		noSpare  bool
		bigFirst bool
	}{
		{"16MiB free", 16 << 20, Options{}, 2 << 20, false, false},
		{"1MiB free", 1 << 20, Options{}, 256 << 10, false, false},
		{"700KiB free", 700 << 10, Options{}, 256 << 10, true, false},
		{"MaxBytes 4MiB", 0, Options{MaxBytes: 4 << 20}, 512 << 10, false, true},
		{"MaxBytes 256KiB", 0, Options{MaxBytes: 256 << 10}, 128 << 10, false, false},
		{"SegmentBytes", 16 << 20, Options{SegmentBytes: 100 << 10}, 100 << 10, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ffs := newFaultFS()
			ffs.free.Store(c.free)
			c.opts.FS = ffs
			s := open(t, dir, c.opts)
			defer s.Close()
			if st := s.Status(); !st.Accepting || st.SegmentBytes != c.want {
				t.Fatalf("Status %+v, want SegmentBytes %d", st, c.want)
			}
			if !c.noSpare {
				poll.Within(t, waitLimit, "the spare", func() bool {
					s.spareMu.Lock()
					defer s.spareMu.Unlock()
					return s.spare != nil
				})
			} else {
				time.Sleep(50 * time.Millisecond)
			}
			bound := min(s.opts.MaxBytes, 2*c.want)
			if c.free > 0 {
				bound = min(bound, max(c.free/4, 2*c.want))
			}
			sizes, total := fileSizes(t, dir)
			if total > bound || total > c.free && c.free > 0 {
				t.Fatalf("files %v: %d bytes preallocated, allowed %d", sizes, total, bound)
			}
			for name, n := range sizes {
				if n != c.want {
					t.Fatalf("files %v: %s is not %d bytes", sizes, name, c.want)
				}
			}
			if _, ok := sizes[spareName]; ok == c.noSpare {
				t.Fatalf("files %v: spare expected: %v", sizes, !c.noSpare)
			}
			if c.bigFirst {
				big := make([]byte, c.want+1000)
				if _, err := s.Append(context.Background(), big); err != nil {
					t.Fatal(err)
				}
				sizes, _ := fileSizes(t, dir)
				found := false
				for _, n := range sizes {
					found = found || n == int64(len(big))+headerSize
				}
				if !found {
					t.Fatalf("files %v: no segment of the big record's size", sizes)
				}
			}
		})
	}
	if got := (&Spool{opts: Options{MaxBytes: 1 << 30, SegmentBytes: 64 << 20}}).segmentSize(-1); got != 64<<20 {
		t.Fatalf("unknown free space: %d", got)
	}
}

// fileSizes returns the sizes of the segment and spare files.
func fileSizes(t testing.TB, dir string) (map[string]int64, int64) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	var total int64
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), segSuffix) && e.Name() != spareName {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = fi.Size()
		total += fi.Size()
	}
	return m, total
}

// Open removes what interrupted operations left.
func TestLeftoversRemovedAtOpen(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	writeRecords(t, dir, Options{SegmentBytes: 4096}, 5) // seqs 1..5 in segment 1
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	seg1 := filepath.Base(segFiles(t, dir, "*.seg")[0])
	write(spareName, []byte("half a spare"))
	write(watermarkName+".tmp", []byte("12"))
	write(seg1+salvageSuffix, []byte("an interrupted salvage"))
	write("00000000000000000002.next", nil)
	write("00000000000000000009.next", nil)
	s := open(t, dir, Options{SegmentBytes: 4096})
	defer s.Close()
	if b, _ := os.ReadFile(filepath.Join(dir, spareName)); string(b) == "half a spare" {
		t.Fatal("the old spare is still there")
	}
	for _, name := range []string{watermarkName + ".tmp", seg1 + salvageSuffix, "00000000000000000002.next"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left after Open: %v", name, err)
		}
	}
	if got := drain(t, s); len(got) != 5 {
		t.Fatalf("%d records", len(got))
	}
	// The sequence goes on after the greatest marker, and once a segment
	// carries it, the marker goes.
	seq, err := s.Append(context.Background(), []byte("x"))
	if err != nil || seq != 9 {
		t.Fatalf("Append = %d, %v; want seq 9", seq, err)
	}
	poll.Within(t, waitLimit, "the marker removed", func() bool { return len(segFiles(t, dir, "*.next")) == 0 })
	for _, name := range leftovers(t, dir) {
		if name != "00000000000000000009.seg" { // the new active segment next to segment 1
			t.Fatalf("leftover %s", name)
		}
	}
}

// Every segment acknowledged and reclaimed, the newest too (a failed write
// left no active segment): the marker carries the sequence number across a
// restart.
func TestSequenceContinuesAfterEverythingReclaimed(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	ffs := newFaultFS()
	s := open(t, dir, Options{FS: ffs, SegmentBytes: 4096})
	ctx := context.Background()
	var last uint64
	for i := range 60 {
		seq, err := s.Append(ctx, payload(i))
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	ffs.enospc.Store(true)
	if _, err := s.Append(ctx, []byte("fails")); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Append: %v", err)
	}
	for _, r := range drain(t, s) {
		s.Ack(r.Seq)
	}
	poll.Within(t, waitLimit, "every segment reclaimed", func() bool { return len(segFiles(t, dir, "*.seg")) == 0 })
	if m := segFiles(t, dir, "*.next"); len(m) != 1 {
		t.Fatalf("markers: %v", m)
	}
	s.Close()
	s = open(t, dir, Options{SegmentBytes: 4096})
	defer s.Close()
	seq, err := s.Append(ctx, []byte("after"))
	if err != nil || seq <= last+1 { // last+1 was the failed batch's
		t.Fatalf("Append after reopen = %d, %v; last was %d", seq, err, last)
	}
	poll.Within(t, waitLimit, "the marker removed", func() bool { return len(segFiles(t, dir, "*.next")) == 0 })
	if got := drain(t, s); len(got) != 1 || got[0].Seq != seq {
		t.Fatalf("records: %v", got)
	}
}

// A spool full for its bound reports so from the first refusal until the
// live bytes are back at 7/8 of the bound, logging each change once; Append
// takes what fits meanwhile.
func TestBoundFullStatus(t *testing.T) {
	noLeaks(t)
	rec := int64(headerSize + 100)
	var logs logBuf
	s := open(t, t.TempDir(), Options{MaxBytes: 16 * rec, SegmentBytes: 4 * rec, Logger: logs.logger()})
	defer s.Close()
	data := make([]byte, 100)
	var seqs []uint64
	for range 16 {
		seq, err := s.Append(context.Background(), data)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	if st := s.Status(); !st.Accepting {
		t.Fatalf("Status before a refusal: %+v", st)
	}
	for range 3 {
		if _, err := s.Append(context.Background(), data); err != ErrFull {
			t.Fatalf("Append = %v", err)
		}
	}
	if st := s.Status(); st.Accepting || st.Err != ErrFull || st.Since.IsZero() {
		t.Fatalf("Status at the bound: %+v", st)
	}
	s.Ack(seqs[0])
	if _, err := s.Append(context.Background(), data); err != nil {
		t.Fatalf("Append after an ack: %v", err)
	}
	if st := s.Status(); st.Accepting {
		t.Fatalf("Status above 7/8 of the bound: %+v", st)
	}
	s.Ack(seqs[1])
	s.Ack(seqs[2])
	if st := s.Status(); !st.Accepting || st.Err != nil {
		t.Fatalf("Status at 7/8 of the bound: %+v", st)
	}
	full, back := logs.lines("spool full: MaxBytes reached; refusing appends"), logs.lines("spool accepting again: below its bound")
	if len(full) != 1 || len(back) != 1 || !strings.Contains(back[0], `"refused_appends":3`) {
		t.Fatalf("logs: %q %q", full, back)
	}
}
