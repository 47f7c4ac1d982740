package apps

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DefaultPollInterval is how often a Registry reads its file for a change
// when Options.PollInterval is zero. A change is seen within it; a
// Kubernetes Secret or ConfigMap reaches the pod's volume up to a minute or
// so after it is updated anyway.
const DefaultPollInterval = 2 * time.Second

// Options configures NewRegistry; the zero value is valid.
type Options struct {
	// PollInterval is how often the file (and the token files it names) is
	// read to see whether it changed; 0 means DefaultPollInterval.
	PollInterval time.Duration
	// Logger receives a record per reload (info) and per file that does not
	// load (error, with the reason; never a token). nil means
	// slog.Default().
	Logger *slog.Logger
	// OnReload, if set, is called after each reload on Serve's goroutine:
	// with the Set now in force, or with the error that kept the previous
	// one in force.
	OnReload func(s *Set, err error)
	// now is the clock of the buckets' new rates; nil means time.Now.
	now func() time.Time
}

// Registry holds the Set of an auth file in force and reloads it: when the
// file or a token file it names changes (read every PollInterval: a change of
// content, whatever its mtime), and when Reload asks. A file that does not
// load leaves the Set in force as it is.
//
// Why polling, not fsnotify (served, v1.10.1): a Kubernetes Secret or
// ConfigMap volume replaces its files by swapping a "..data" symlink, which
// a watch on the file never sees (the watched inode is not written to) and
// a watch on the directory sees as events on other names; editors replace
// files by rename, which ends an inotify watch; and network file systems
// send no events. Reading a few small files every two seconds sees all of
// these the same way, and compares content, not an mtime of one-second
// granularity that a quick second write may not change.
//
// The Set is read by any goroutine (Current); it is replaced only by the
// goroutine that runs Serve (after NewRegistry, which loads the first one
// before Serve can run), which also owns buckets and last.
type Registry struct {
	path     string
	interval time.Duration
	log      *slog.Logger
	onReload func(*Set, error)
	now      func() time.Time

	cur atomic.Pointer[Set]
	req chan struct{} // capacity 1: a reload asked for and not done yet

	// Owned by the goroutine that reloads.
	buckets map[string]*rate.Limiter // by app name, carried from Set to Set
	last    [sha256.Size]byte        // the inputs last loaded, or last tried
}

// NewRegistry returns the Registry of the file at path with first in force:
// the Set Load(path) returned at start (its error is a configuration error,
// the caller's to report).
func NewRegistry(path string, first *Set, opts Options) *Registry {
	r := &Registry{
		path:     path,
		interval: opts.PollInterval,
		log:      opts.Logger,
		onReload: opts.OnReload,
		now:      opts.now,
		req:      make(chan struct{}, 1),
		buckets:  map[string]*rate.Limiter{},
		last:     first.fp,
	}
	if r.interval <= 0 {
		r.interval = DefaultPollInterval
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.onReload == nil {
		r.onReload = func(*Set, error) {}
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.install(first)
	return r
}

// Current is the Set in force now.
func (r *Registry) Current() *Set { return r.cur.Load() }

// Reload asks Serve to load the file again now, changed or not (SIGHUP). It
// never blocks; asks made while one is pending are one.
func (r *Registry) Reload() {
	select {
	case r.req <- struct{}{}:
	default:
	}
}

// Serve reloads the file when it changes and when Reload asks, until ctx
// ends (it returns nil then).
func (r *Registry) Serve(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.reload(false)
		case <-r.req:
			r.reload(true)
		}
	}
}

// reload loads the file and puts it in force; unless asked, only when its
// inputs changed since they were last loaded or tried (a file that does not
// load is reported once per version, not once per poll).
func (r *Registry) reload(asked bool) {
	s, fp, err := load(r.path)
	if !asked && fp == r.last {
		return
	}
	r.last = fp
	trigger := "change"
	if asked {
		trigger = "request"
	}
	if err != nil {
		r.log.Error("auth file not reloaded: the apps in force stay as they were", "trigger", trigger, "error", err.Error())
		r.onReload(nil, err)
		return
	}
	r.install(s)
	r.log.Info("auth file reloaded", "file", r.path, "trigger", trigger, "apps", s.Names())
	for _, w := range s.warnings {
		r.log.Warn("auth file: " + w)
	}
	r.onReload(s, nil)
}

// install gives s's apps the buckets their names had (set to their new rate
// and burst; a new app gets a full one, one that no longer has a rate none)
// and puts s in force.
func (r *Registry) install(s *Set) {
	now := r.now()
	buckets := make(map[string]*rate.Limiter, len(s.apps))
	for _, a := range s.apps {
		if a.bucket == nil {
			continue
		}
		if b := r.buckets[a.name]; b != nil {
			if b.Limit() != a.limit {
				b.SetLimitAt(now, a.limit)
			}
			if b.Burst() != a.burst {
				b.SetBurstAt(now, a.burst)
			}
			a.bucket = b
		}
		buckets[a.name] = a.bucket
	}
	r.buckets = buckets
	r.cur.Store(s)
}
