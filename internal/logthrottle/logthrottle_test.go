package logthrottle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a clock whose time moves only in Advance, which runs the
// AfterFunc callbacks that fall due synchronously, in time order.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c  *fakeClock
	at time.Time
	f  func()
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	i := slices.Index(t.c.timers, t)
	if i < 0 {
		return false
	}
	t.c.timers = slices.Delete(t.c.timers, i, i+1)
	return true
}

// pending is the number of armed timers.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Advance moves the time by d and runs the callbacks due by then.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	for {
		var due *fakeTimer
		for _, t := range c.timers {
			if !t.at.After(c.now) && (due == nil || t.at.Before(due.at)) {
				due = t
			}
		}
		if due == nil {
			break
		}
		c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool { return t == due })
		c.mu.Unlock()
		due.f()
		c.mu.Lock()
	}
	c.mu.Unlock()
}

// syncBuffer is an io.Writer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines written so far and forgets them.
func (b *syncBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSuffix(b.buf.String(), "\n")
	b.buf.Reset()
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 {
		return slog.Attr{}
	}
	return a
}

const interval = 10 * time.Second

// setup returns a throttling logger writing text lines to out, on a fake clock.
func setup(opts Options) (*Handler, *slog.Logger, *fakeClock, *syncBuffer) {
	out := &syncBuffer{}
	clk := newFakeClock()
	if opts.Interval == 0 {
		opts.Interval = interval
	}
	opts.clock = clk
	h := New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: dropTime}), opts)
	return h, slog.New(h), clk, out
}

var repeatedRE = regexp.MustCompile(`\brepeated=(\d+)`)

// tally returns the lines without a repeated attribute and the sum of the
// repeated counts of the others.
func tally(t *testing.T, lines []string) (passed int, repeated int) {
	t.Helper()
	for _, l := range lines {
		m := repeatedRE.FindStringSubmatch(l)
		if m == nil {
			passed++
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil || n <= 0 {
			t.Errorf("bad repeated count in %q", l)
		}
		repeated += n
	}
	return passed, repeated
}

var (
	errFull = errors.New("write /spool/seg-7: no space left on device")
	errPerm = errors.New("open /spool/seg-8: permission denied")
)

func TestStorm(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		every     time.Duration
		wantLines int // 1 passed + one summary per interval, after silence
	}{
		{"10000 in 30s", 10000, 3 * time.Millisecond, 1 + 3},
		{"10000 in 1s", 10000, 100 * time.Microsecond, 1 + 1},
		{"10000 at once", 10000, 0, 1 + 1},
		{"one", 1, 0, 1},
		{"two", 2, 0, 1 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, log, clk, out := setup(Options{})
			for i := range tt.n {
				log.Error("spool: message not made durable", "message_id", fmt.Sprint("m", i), "error", errFull)
				clk.Advance(tt.every)
			}
			clk.Advance(interval) // silence: the last summary
			clk.Advance(interval) // a quiet window: the key is forgotten
			lines := out.lines()
			if len(lines) != tt.wantLines {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), tt.wantLines, strings.Join(lines, "\n"))
			}
			passed, repeated := tally(t, lines)
			if passed != 1 || passed+repeated != tt.n {
				t.Errorf("passed %d + repeated %d, want 1 + %d", passed, repeated, tt.n-1)
			}
			if !strings.Contains(lines[0], `message_id=m0 `) {
				t.Errorf("first line is not the first record: %s", lines[0])
			}
			if tt.n > 1 {
				last := lines[len(lines)-1]
				want := fmt.Sprintf(`level=ERROR msg="spool: message not made durable" message_id=m%d error="%s" repeated=`, tt.n-1, errFull)
				if !strings.HasPrefix(last, want) || !strings.HasSuffix(last, " interval=10s") {
					t.Errorf("last summary:\n got %s\nwant %s...interval=10s", last, want)
				}
			}
			if n := len(h.t.entries); n != 0 || clk.pending() != 0 {
				t.Errorf("after a quiet interval: %d keys, %d timers; want 0, 0", n, clk.pending())
			}
		})
	}
}

func TestKeys(t *testing.T) {
	type rec struct {
		level slog.Level
		msg   string
		args  []any
	}
	tests := []struct {
		name       string
		opts       Options
		recs       []rec
		wantPassed int // lines written while logging
		wantLater  int // summaries written after an interval
	}{
		{
			name: "different errors are not merged",
			recs: []rec{
				{slog.LevelError, "write failed", []any{"error", errFull}},
				{slog.LevelError, "write failed", []any{"error", errPerm}},
				{slog.LevelError, "write failed", []any{"error", errFull}},
				{slog.LevelError, "write failed", []any{"error", errPerm}},
			},
			wantPassed: 2, wantLater: 2,
		},
		{
			name: "err is a key attribute too",
			recs: []rec{
				{slog.LevelWarn, "cannot delete segment", []any{"err", errFull}},
				{slog.LevelWarn, "cannot delete segment", []any{"err", errPerm}},
			},
			wantPassed: 2,
		},
		{
			name: "an error and its text are the same",
			recs: []rec{
				{slog.LevelError, "write failed", []any{"error", errFull}},
				{slog.LevelError, "write failed", []any{"error", errFull.Error()}},
			},
			wantPassed: 1, wantLater: 1,
		},
		{
			name: "per-request attributes do not split keys",
			recs: []rec{
				{slog.LevelError, "write failed", []any{"message_id", "a", "error", errFull, "seq", 1}},
				{slog.LevelError, "write failed", []any{"message_id", "b", "error", errFull, "seq", 2}},
				{slog.LevelError, "write failed", []any{"error", errFull, "message_id", "c"}},
			},
			wantPassed: 1, wantLater: 1,
		},
		{
			name: "different messages are not merged",
			recs: []rec{
				{slog.LevelError, "write failed", []any{"error", errFull}},
				{slog.LevelError, "read failed", []any{"error", errFull}},
			},
			wantPassed: 2,
		},
		{
			name: "different levels are not merged",
			recs: []rec{
				{slog.LevelError, "write failed", []any{"error", errFull}},
				{slog.LevelWarn, "write failed", []any{"error", errFull}},
			},
			wantPassed: 2,
		},
		{
			name: "different components are not merged",
			recs: []rec{
				{slog.LevelError, "write failed", []any{"component", "spool"}},
				{slog.LevelError, "write failed", []any{"component", "relay"}},
			},
			wantPassed: 2,
		},
		{
			name: "a key attribute inside a group attribute is not part of the key",
			recs: []rec{
				{slog.LevelError, "write failed", []any{slog.Group("req", "error", "a")}},
				{slog.LevelError, "write failed", []any{slog.Group("req", "error", "b")}},
			},
			wantPassed: 1, wantLater: 1,
		},
		{
			name: "custom KeyAttrs",
			opts: Options{KeyAttrs: []string{"segment"}},
			recs: []rec{
				{slog.LevelError, "write failed", []any{"segment", 1, "error", errFull}},
				{slog.LevelError, "write failed", []any{"segment", 1, "error", errPerm}},
				{slog.LevelError, "write failed", []any{"segment", 2, "error", errFull}},
			},
			wantPassed: 2, wantLater: 1,
		},
		{
			name: "empty KeyAttrs: level and message only",
			opts: Options{KeyAttrs: []string{}},
			recs: []rec{
				{slog.LevelError, "write failed", []any{"error", errFull}},
				{slog.LevelError, "write failed", []any{"error", errPerm}},
			},
			wantPassed: 1, wantLater: 1,
		},
		{
			name: "below the default level records pass",
			recs: []rec{
				{slog.LevelInfo, "published", []any{"error", "none"}},
				{slog.LevelInfo, "published", []any{"error", "none"}},
				{slog.LevelDebug, "published", []any{"error", "none"}},
				{slog.LevelDebug, "published", []any{"error", "none"}},
			},
			wantPassed: 4,
		},
		{
			name: "MinLevel error: warnings pass",
			opts: Options{MinLevel: slog.LevelError},
			recs: []rec{
				{slog.LevelWarn, "slow", nil},
				{slog.LevelWarn, "slow", nil},
				{slog.LevelError, "down", nil},
				{slog.LevelError, "down", nil},
			},
			wantPassed: 3, wantLater: 1,
		},
		{
			name: "MaxKeys: keys beyond the bound pass",
			opts: Options{MaxKeys: 2},
			recs: []rec{
				{slog.LevelError, "a", nil}, {slog.LevelError, "a", nil},
				{slog.LevelError, "b", nil}, {slog.LevelError, "b", nil},
				{slog.LevelError, "c", nil}, {slog.LevelError, "c", nil}, {slog.LevelError, "c", nil},
			},
			wantPassed: 2 + 3, wantLater: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, log, clk, out := setup(tt.opts)
			for _, r := range tt.recs {
				log.Log(context.Background(), r.level, r.msg, r.args...)
			}
			lines := out.lines()
			if len(lines) != tt.wantPassed {
				t.Errorf("got %d lines, want %d:\n%s", len(lines), tt.wantPassed, strings.Join(lines, "\n"))
			}
			passed, _ := tally(t, lines)
			if passed != len(lines) {
				t.Errorf("summary before the interval ended:\n%s", strings.Join(lines, "\n"))
			}
			if tt.opts.MaxKeys > 0 && len(h.t.entries) > tt.opts.MaxKeys {
				t.Errorf("%d keys tracked, MaxKeys %d", len(h.t.entries), tt.opts.MaxKeys)
			}
			clk.Advance(interval)
			later := out.lines()
			if len(later) != tt.wantLater {
				t.Errorf("got %d summaries, want %d:\n%s", len(later), tt.wantLater, strings.Join(later, "\n"))
			}
			passedLater, repeated := tally(t, later)
			if passedLater != 0 || len(tt.recs) != len(lines)+repeated {
				t.Errorf("%d records, %d lines passed, %d repeated", len(tt.recs), len(lines), repeated)
			}
		})
	}
}

func TestWindows(t *testing.T) {
	t.Run("summary after silence, then the key is forgotten", func(t *testing.T) {
		h, log, clk, out := setup(Options{})
		for range 5 {
			log.Warn("broker blocked publishing", "reason", "low on disk")
		}
		clk.Advance(interval - time.Nanosecond)
		if l := out.lines(); len(l) != 1 {
			t.Fatalf("before the window's end: %q", l)
		}
		clk.Advance(time.Nanosecond)
		want := []string{`level=WARN msg="broker blocked publishing" reason="low on disk" repeated=4 interval=10s`}
		if l := out.lines(); !slices.Equal(l, want) {
			t.Fatalf("at the window's end:\n got %q\nwant %q", l, want)
		}
		clk.Advance(interval)
		if l := out.lines(); len(l) != 0 || len(h.t.entries) != 0 || clk.pending() != 0 {
			t.Fatalf("after a quiet window: lines %q, %d keys, %d timers", l, len(h.t.entries), clk.pending())
		}
		log.Warn("broker blocked publishing", "reason", "low on disk")
		if l := out.lines(); len(l) != 1 || strings.Contains(l[0], "repeated") {
			t.Fatalf("after the key was forgotten: %q", l)
		}
	})
	t.Run("a record after a quiet window passes at once", func(t *testing.T) {
		_, log, clk, out := setup(Options{})
		log.Warn("slow", "error", "x")
		clk.Advance(interval + interval/32) // the timer has not ended the window
		log.Warn("slow", "error", "x")
		if l := out.lines(); len(l) != 2 {
			t.Fatalf("got %q, want two passed lines", l)
		}
	})
	t.Run("keys ending at different times", func(t *testing.T) {
		_, log, clk, out := setup(Options{})
		for i := range 100 {
			log.Error("failed", "error", i)
			log.Error("failed", "error", i)
			clk.Advance(interval / 100)
		}
		clk.Advance(interval + interval/16)
		passed, repeated := tally(t, out.lines())
		if passed != 100 || repeated != 100 {
			t.Errorf("passed %d, repeated %d; want 100, 100", passed, repeated)
		}
	})
}

func TestDerived(t *testing.T) {
	t.Run("WithAttrs key attributes split keys, others do not", func(t *testing.T) {
		_, log, clk, out := setup(Options{})
		spool := log.With("component", "spool")
		relay := log.With("component", "relay")
		for i := range 3 {
			spool.With("message_id", i).Error("failed", "error", errFull)
			relay.With("message_id", i).Error("failed", "error", errFull)
		}
		clk.Advance(interval)
		want := []string{
			fmt.Sprintf(`level=ERROR msg=failed component=spool message_id=0 error="%s"`, errFull),
			fmt.Sprintf(`level=ERROR msg=failed component=relay message_id=0 error="%s"`, errFull),
			fmt.Sprintf(`level=ERROR msg=failed component=spool message_id=2 error="%s" repeated=2 interval=10s`, errFull),
			fmt.Sprintf(`level=ERROR msg=failed component=relay message_id=2 error="%s" repeated=2 interval=10s`, errFull),
		}
		if got := out.lines(); !slices.Equal(got, want) {
			t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("WithGroup is part of the key and the summary is in the group", func(t *testing.T) {
		_, log, clk, out := setup(Options{})
		g := log.WithGroup("relay")
		for range 3 {
			g.Error("failed", "error", "x")
			log.Error("failed", "error", "x")
		}
		clk.Advance(interval)
		want := []string{
			`level=ERROR msg=failed relay.error=x`,
			`level=ERROR msg=failed error=x`,
			`level=ERROR msg=failed relay.error=x relay.repeated=2 relay.interval=10s`,
			`level=ERROR msg=failed error=x repeated=2 interval=10s`,
		}
		if got := out.lines(); !slices.Equal(got, want) {
			t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("derived handlers share the table and Flush", func(t *testing.T) {
		h, log, _, out := setup(Options{})
		a := log.With("x", 1)
		b := log.With("x", 2).WithGroup("")
		a.Error("failed")
		b.Error("failed")
		b.Error("failed")
		if err := b.Handler().(*Handler).Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		want := []string{`level=ERROR msg=failed x=1`, `level=ERROR msg=failed x=2 repeated=2 interval=10s`}
		if got := out.lines(); !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
		if len(h.t.entries) != 0 {
			t.Errorf("%d keys after Flush", len(h.t.entries))
		}
	})
}

type failingHandler struct{ slog.Handler }

var errWrite = errors.New("write: broken pipe")

func (failingHandler) Handle(context.Context, slog.Record) error { return errWrite }

func TestFlush(t *testing.T) {
	t.Run("writes pending counts and stops the timer", func(t *testing.T) {
		h, log, clk, out := setup(Options{})
		log.Error("a", "error", "x")
		log.Error("a", "error", "x")
		log.Error("b", "error", "x")
		log.Error("c", "error", "x")
		log.Error("c", "error", "x")
		log.Error("c", "error", "x")
		clk.Advance(interval / 2)
		if err := h.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		want := []string{
			`level=ERROR msg=a error=x`, `level=ERROR msg=b error=x`, `level=ERROR msg=c error=x`,
			`level=ERROR msg=a error=x repeated=1 interval=10s`,
			`level=ERROR msg=c error=x repeated=2 interval=10s`,
		}
		if got := out.lines(); !slices.Equal(got, want) {
			t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if clk.pending() != 0 || len(h.t.entries) != 0 {
			t.Errorf("after Flush: %d timers, %d keys", clk.pending(), len(h.t.entries))
		}
		clk.Advance(2 * interval)
		if got := out.lines(); len(got) != 0 {
			t.Errorf("after Flush: %q", got)
		}
		log.Error("a", "error", "x")
		if got := out.lines(); len(got) != 1 {
			t.Errorf("the handler is not usable after Flush: %q", got)
		}
		if err := h.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("returns the next handler's errors, wrapped", func(t *testing.T) {
		clk := newFakeClock()
		h := New(failingHandler{slog.DiscardHandler}, Options{clock: clk})
		if err := h.Handle(context.Background(), slog.NewRecord(clk.Now(), slog.LevelError, "m", 0)); !errors.Is(err, errWrite) {
			t.Fatalf("Handle: %v", err)
		}
		_ = h.Handle(context.Background(), slog.NewRecord(clk.Now(), slog.LevelError, "m", 0))
		err := h.Flush(context.Background())
		if !errors.Is(err, errWrite) || !strings.Contains(err.Error(), `logthrottle: writing the summary of "m"`) {
			t.Fatalf("Flush: %v", err)
		}
	})
}

func TestDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	if o.MinLevel.Level() != slog.LevelWarn || o.Interval != 10*time.Second || o.MaxKeys != 1024 ||
		!slices.Equal(o.KeyAttrs, []string{"error", "err", "component"}) {
		t.Errorf("defaults: %+v", o)
	}
	if _, ok := o.clock.(realClock); !ok {
		t.Errorf("clock %T", o.clock)
	}
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelError)
	_, log, _, out := setup(Options{MinLevel: lv})
	log.Warn("w")
	log.Warn("w")
	lv.Set(slog.LevelWarn)
	log.Warn("w")
	log.Warn("w")
	if got := out.lines(); len(got) != 3 {
		t.Errorf("MinLevel as a LevelVar: %q", got)
	}
}

// TestConcurrent logs from many goroutines while the clock moves and Flush
// runs; no record may be lost or counted twice (run with -race).
func TestConcurrent(t *testing.T) {
	h, log, clk, out := setup(Options{MaxKeys: 8})
	const goroutines, each = 32, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			l := log.With("worker", g)
			if g%2 == 0 {
				l = l.WithGroup("even")
			}
			for i := range each {
				l.Error("failed", "error", fmt.Sprint("e", i%10), "message_id", i)
				if i%100 == 0 {
					l.Info("progress", "i", i)
				}
			}
		})
	}
	stop := make(chan struct{})
	var ticker sync.WaitGroup
	ticker.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			clk.Advance(interval / 7)
			h.t.mu.Lock()
			if n := len(h.t.entries); n > 8 {
				t.Errorf("%d keys tracked, MaxKeys 8", n)
			}
			h.t.mu.Unlock()
			if i%50 == 0 {
				if err := h.Flush(context.Background()); err != nil {
					t.Error(err)
				}
			}
		}
	})
	wg.Wait()
	close(stop)
	ticker.Wait()
	if err := h.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var errLines []string
	info := 0
	for _, l := range out.lines() {
		if strings.Contains(l, "msg=progress") {
			info++
		} else {
			errLines = append(errLines, l)
		}
	}
	passed, repeated := tally(t, errLines)
	if passed+repeated != goroutines*each || info != goroutines*each/100 {
		t.Errorf("passed %d + repeated %d = %d errors, %d infos; want %d, %d",
			passed, repeated, passed+repeated, info, goroutines*each, goroutines*each/100)
	}
	t.Logf("%d error records written as %d lines", goroutines*each, len(errLines))
}

// TestRealClock checks the wiring to time.AfterFunc: a burst then silence
// gets its summary without Flush.
func TestRealClock(t *testing.T) {
	got := make(chan slog.Record, 10)
	h := New(chanHandler(got), Options{Interval: 20 * time.Millisecond})
	log := slog.New(h)
	for range 3 {
		log.Error("failed", "error", "x")
	}
	if r := <-got; r.NumAttrs() != 1 {
		t.Fatalf("first record has %d attributes", r.NumAttrs())
	}
	select {
	case r := <-got:
		var n int64
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == RepeatedKey {
				n = a.Value.Int64()
			}
			return true
		})
		if n != 2 {
			t.Errorf("repeated=%d, want 2", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no summary")
	}
	if err := h.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

type chanHandler chan slog.Record

func (chanHandler) Enabled(context.Context, slog.Level) bool { return true }
func (c chanHandler) Handle(_ context.Context, r slog.Record) error {
	c <- r.Clone()
	return nil
}
func (c chanHandler) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c chanHandler) WithGroup(string) slog.Handler      { return c }

// TestSuppressedAllocs checks that a suppressed record costs no allocation.
func TestSuppressedAllocs(t *testing.T) {
	clk := newFakeClock()
	h := New(slog.DiscardHandler, Options{clock: clk})
	d := h.WithAttrs([]slog.Attr{slog.String("component", "spool")})
	r := slog.NewRecord(clk.Now(), slog.LevelError, "spool: message not made durable", 0)
	r.AddAttrs(slog.String("message_id", "m-1"), slog.Any("error", fmt.Errorf("append: %w", errFull)),
		slog.Int("seq", 7), slog.String("a", "a"), slog.String("b", "b"), slog.String("c", "c"), slog.String("d", "d"))
	ctx := context.Background()
	_ = d.Handle(ctx, r)
	if n := testing.AllocsPerRun(1000, func() { _ = d.Handle(ctx, r) }); n != 0 {
		t.Errorf("%v allocations per suppressed record", n)
	}
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSuppressed(b *testing.B) {
	h := New(slog.NewTextHandler(io.Discard, nil), Options{})
	log := slog.New(h).With("component", "spool")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			log.Error("spool: message not made durable", "message_id", "m-1", "error", errFull)
		}
	})
	_ = h.Flush(context.Background())
}
