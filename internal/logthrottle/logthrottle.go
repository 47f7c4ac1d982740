// Package logthrottle provides a [log/slog] Handler that writes a storm of
// identical warnings and errors once per interval, with a count, instead of
// once per occurrence.
//
// Kept after reading the libraries' source (2026-12-04): zap v1.28's sampler keys on level and message only (two errors under one message merge) and reports drops to a hook, never as a record; golang.org/x/time/rate v0.16 decides per key but keeps no count and has no end-of-window event, so the key table, its bound, the timer and the summary (most of this file) would stay; samber/slog-sampling: the module proxy answers 403.
//
// # Semantics
//
// Records below Options.MinLevel are passed to the next handler untouched and
// cost nothing beyond one level comparison. Records at or above it are
// grouped by a key made of
//   - the record's level and message,
//   - the groups opened with WithGroup on the handler that received it, and
//   - the value of every attribute whose key is in Options.KeyAttrs, whether
//     added with WithAttrs or on the record itself, at any WithGroup depth but
//     not inside a group-valued attribute (slog.Group).
//
// All other attributes (message_id, seq, segment, ...) are not part of the key:
// records that differ only in them are the same.
//
// The first record of a key is passed on and opens a window of
// Options.Interval. Records of that key arriving within the window are counted
// and not written. When the window ends:
//   - if the count is > 0, ONE summary record is written: the same level and
//     message, through the handler (hence with the WithAttrs/WithGroup
//     attributes) that received the last suppressed record, with that record's
//     attributes and source position, plus repeated=<count> (int64) and
//     interval=<Options.Interval> (time.Duration), both inside the handler's
//     innermost WithGroup group, if any. Its time is the time it is written.
//     The summary opens the next window of that key, so a steady storm yields
//     one line when it starts and then one summary per interval;
//   - if the count is 0, the key is forgotten and its next record is passed on.
//
// Window ends are handled by a timer (time.AfterFunc; no goroutine exists
// while it waits), so a burst followed by silence still gets its summary. To
// bound the work when many keys end at different moments, the timer fires at
// most 16 times per interval: a summary may be written up to Interval/16
// after its window ended, and records arriving in that time are counted in it.
//
// At most Options.MaxKeys keys are tracked at once. A record whose key is not
// tracked while the table is full is passed on unthrottled; keys leave the
// table one quiet interval after their last summary.
//
// Handlers derived with WithAttrs and WithGroup share the table and the
// timer of the handler returned by New. Call [Handler.Flush] at shutdown to
// write the pending counts.
package logthrottle

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Defaults applied by New to zero fields of Options.
const (
	DefaultMinLevel = slog.LevelWarn
	DefaultInterval = 10 * time.Second
	DefaultMaxKeys  = 1024
)

// DefaultKeyAttrs are the attribute keys that are part of the dedup key when
// Options.KeyAttrs is nil: the error text (this service logs it as "error" or
// "err") and the component that logged it.
var DefaultKeyAttrs = []string{"error", "err", "component"}

// Names of the attributes added to a summary record.
const (
	RepeatedKey = "repeated" // int64: records suppressed in the window
	IntervalKey = "interval" // time.Duration: Options.Interval
)

// Options configures a Handler. The zero value means the defaults above.
type Options struct {
	// MinLevel is the lowest level that is deduplicated; records below it
	// pass through untouched. Nil means DefaultMinLevel (slog.LevelWarn).
	// A *slog.LevelVar may be used to change it at run time.
	MinLevel slog.Leveler

	// Interval is the length of a window. Zero or negative means
	// DefaultInterval (10s).
	Interval time.Duration

	// KeyAttrs are the keys of the attributes whose values are part of the
	// dedup key. Nil means DefaultKeyAttrs; an empty non-nil slice means the
	// key is the level, message and groups only.
	KeyAttrs []string

	// MaxKeys bounds the number of keys tracked at once. Zero or negative
	// means DefaultMaxKeys (1024).
	MaxKeys int

	// clock replaces the wall clock in tests; nil means realClock.
	clock clock
}

// withDefaults returns o with its zero fields replaced by the defaults: the
// only place where defaults are applied.
func (o Options) withDefaults() Options {
	if o.MinLevel == nil {
		o.MinLevel = DefaultMinLevel
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.KeyAttrs == nil {
		o.KeyAttrs = DefaultKeyAttrs
	}
	o.KeyAttrs = slices.Clone(o.KeyAttrs)
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.clock == nil {
		o.clock = realClock{}
	}
	return o
}

// clock is the time source; tests substitute a fake one.
type clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) stopper
}

type stopper interface{ Stop() bool }

type realClock struct{}

func (realClock) Now() time.Time                              { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }

// Handler is the slog.Handler returned by New and by its WithAttrs and
// WithGroup methods. It is safe for concurrent use.
type Handler struct {
	t      *table
	next   slog.Handler
	prefix string // encoded groups and key attributes of WithGroup/WithAttrs
}

// New returns a Handler that writes to next as described in the package
// documentation.
func New(next slog.Handler, opts Options) *Handler {
	opts = opts.withDefaults()
	return &Handler{
		next: next,
		t: &table{
			opts:    opts,
			entries: make(map[string]*entry),
		},
	}
}

// Enabled reports whether the next handler handles records at level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// WithAttrs returns a Handler that shares h's table and adds attrs to every
// record; those in Options.KeyAttrs become part of the key.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	prefix := []byte(h.prefix)
	for _, a := range attrs {
		prefix = h.t.appendKeyAttr(prefix, a)
	}
	return &Handler{t: h.t, next: h.next.WithAttrs(attrs), prefix: string(prefix)}
}

// WithGroup returns a Handler that shares h's table and opens group name;
// the group is part of the key.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	prefix := append([]byte(h.prefix), tagGroup)
	prefix = appendString(prefix, name)
	return &Handler{t: h.t, next: h.next.WithGroup(name), prefix: string(prefix)}
}

// Handle passes r on, or counts it when its key's window is open. Errors of
// the next handler are returned as they are.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	t := h.t
	if r.Level < t.opts.MinLevel.Level() {
		return h.next.Handle(ctx, r)
	}
	var stack [256]byte
	key := t.appendKey(stack[:0], h.prefix, r)

	t.mu.Lock()
	now := t.opts.clock.Now()
	if e, ok := t.entries[string(key)]; ok {
		if e.count == 0 && !now.Before(e.deadline) {
			// The window ended quietly and the timer has not removed the
			// key yet: this record opens a new window.
			e.deadline = now.Add(t.opts.Interval)
			t.mu.Unlock()
			return h.next.Handle(ctx, r)
		}
		e.count++
		e.next = h.next
		e.pc = r.PC
		clear(e.attrs)
		e.attrs = e.attrs[:0]
		r.Attrs(func(a slog.Attr) bool {
			e.attrs = append(e.attrs, a)
			return true
		})
		t.mu.Unlock()
		return nil
	}
	if len(t.entries) >= t.opts.MaxKeys {
		t.mu.Unlock()
		return h.next.Handle(ctx, r)
	}
	t.seq++
	t.entries[string(key)] = &entry{
		seq:      t.seq,
		level:    r.Level,
		msg:      r.Message,
		deadline: now.Add(t.opts.Interval),
	}
	if t.timer == nil {
		t.armLocked(t.opts.Interval)
	}
	t.mu.Unlock()
	return h.next.Handle(ctx, r)
}

// Flush writes a summary for every key with a pending count, then forgets
// all keys and stops the timer: the next record of any key is passed on.
// It waits for a summary being written by the timer. It may be called on any
// handler derived from the same New, and the Handler stays usable.
// It returns the next handler's errors, wrapped, joined.
func (h *Handler) Flush(ctx context.Context) error {
	t := h.t
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	t.mu.Lock()
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	t.gen++ // a timer callback already running does nothing
	due := make([]summary, 0, len(t.entries))
	for k, e := range t.entries {
		if e.count > 0 {
			due = append(due, t.summaryLocked(e))
		}
		delete(t.entries, k)
	}
	t.mu.Unlock()
	return writeSummaries(ctx, due)
}

// table is the state shared by a Handler and those derived from it.
type table struct {
	opts Options

	// writeMu serializes writing summaries (timer and Flush), so that Flush
	// returns only after a summary being written by the timer is written.
	// It is never taken while mu is held.
	writeMu sync.Mutex

	mu      sync.Mutex
	entries map[string]*entry
	seq     uint64  // creation order of entries, to write summaries in order
	timer   stopper // nil when not armed
	gen     uint64  // identifies the armed timer
}

// entry is one key's window.
type entry struct {
	seq      uint64
	level    slog.Level
	msg      string
	deadline time.Time // end of the current window
	count    int64     // records suppressed in the current window

	// The last suppressed record: its handler, source and attributes.
	next  slog.Handler
	pc    uintptr
	attrs []slog.Attr
}

type summary struct {
	seq  uint64
	next slog.Handler
	r    slog.Record
}

// summaryLocked builds e's summary and resets its count. t.mu must be held.
func (t *table) summaryLocked(e *entry) summary {
	r := slog.NewRecord(t.opts.clock.Now(), e.level, e.msg, e.pc)
	r.AddAttrs(e.attrs...)
	r.AddAttrs(slog.Int64(RepeatedKey, e.count), slog.Duration(IntervalKey, t.opts.Interval))
	s := summary{seq: e.seq, next: e.next, r: r}
	e.count = 0
	e.next = nil
	clear(e.attrs)
	e.attrs = e.attrs[:0]
	return s
}

// armLocked starts the timer. t.mu must be held and no timer armed.
func (t *table) armLocked(d time.Duration) {
	t.gen++
	gen := t.gen
	t.timer = t.opts.clock.AfterFunc(d, func() { t.sweep(gen) })
}

// sweep ends the windows that are over, then re-arms the timer for the
// earliest remaining window end, but no sooner than Interval/16.
func (t *table) sweep(gen uint64) {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	t.mu.Lock()
	if gen != t.gen {
		t.mu.Unlock()
		return
	}
	t.timer = nil
	now := t.opts.clock.Now()
	var due []summary
	var earliest time.Time
	for k, e := range t.entries {
		if now.Before(e.deadline) {
			if earliest.IsZero() || e.deadline.Before(earliest) {
				earliest = e.deadline
			}
			continue
		}
		if e.count == 0 {
			delete(t.entries, k)
			continue
		}
		due = append(due, t.summaryLocked(e))
		e.deadline = now.Add(t.opts.Interval)
		if earliest.IsZero() || e.deadline.Before(earliest) {
			earliest = e.deadline
		}
	}
	if !earliest.IsZero() {
		t.armLocked(max(earliest.Sub(now), t.opts.Interval/16))
	}
	t.mu.Unlock()
	_ = writeSummaries(context.Background(), due) // nowhere to report them
}

func writeSummaries(ctx context.Context, due []summary) error {
	slices.SortFunc(due, func(a, b summary) int { return cmp.Compare(a.seq, b.seq) })
	var errs []error
	for _, s := range due {
		if err := s.next.Handle(ctx, s.r); err != nil {
			errs = append(errs, fmt.Errorf("logthrottle: writing the summary of %q: %w", s.r.Message, err))
		}
	}
	return errors.Join(errs...)
}

// Key encoding: a tag byte, then length-prefixed strings.
const (
	tagGroup byte = 'g'
	tagAttr  byte = 'a'
)

// appendKey appends the key of r received by a handler with prefix.
func (t *table) appendKey(buf []byte, prefix string, r slog.Record) []byte {
	buf = binary.AppendVarint(buf, int64(r.Level))
	buf = appendString(buf, r.Message)
	buf = append(buf, prefix...)
	r.Attrs(func(a slog.Attr) bool {
		buf = t.appendKeyAttr(buf, a)
		return true
	})
	return buf
}

// appendKeyAttr appends a if its key is one of KeyAttrs.
func (t *table) appendKeyAttr(buf []byte, a slog.Attr) []byte {
	i := slices.Index(t.opts.KeyAttrs, a.Key)
	if i < 0 {
		return buf
	}
	buf = append(buf, tagAttr)
	buf = binary.AppendUvarint(buf, uint64(i))
	// Length-prefix the value: reserve 4 bytes, fill them in afterwards.
	at := len(buf)
	buf = append(buf, 0, 0, 0, 0)
	buf = appendValue(buf, a.Value.Resolve())
	binary.BigEndian.PutUint32(buf[at:], uint32(min(len(buf)-at-4, math.MaxUint32)))
	return buf
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// appendValue appends v's text, without allocating for strings, numbers and
// errors. The kind is left out: an error and its Error() text are the same.
func appendValue(buf []byte, v slog.Value) []byte {
	switch v.Kind() {
	case slog.KindString:
		return append(buf, v.String()...)
	case slog.KindInt64:
		return strconv.AppendInt(buf, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(buf, v.Uint64(), 10)
	case slog.KindBool:
		return strconv.AppendBool(buf, v.Bool())
	case slog.KindDuration:
		return strconv.AppendInt(buf, int64(v.Duration()), 10)
	case slog.KindFloat64:
		return strconv.AppendFloat(buf, v.Float64(), 'g', -1, 64)
	case slog.KindTime:
		return v.Time().AppendFormat(buf, time.RFC3339Nano)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return append(buf, x.Error()...)
		case fmt.Stringer:
			return append(buf, x.String()...)
		default:
			return fmt.Append(buf, x)
		}
	default:
		return append(buf, v.String()...)
	}
}
