// Package apps decides who may publish what, and how fast: the apps of
// PUBLISHER_AUTH_FILE (docs/configuration.md, "Auth file"), each with its
// bearer token (kept only as its SHA-256 digest), its scope (exchanges and
// AMQP topic patterns for routing keys, denying everything else) and its rate
// (a token bucket of golang.org/x/time/rate).
//
// A Set is one version of the file, immutable once it is in force: the
// handler reads the Set of the moment and keeps it for the request. A
// Registry holds the Set in force and replaces it when the file changes or on
// request (SIGHUP); a file that does not load leaves the previous Set in
// force. Rate buckets belong to an app's name rather than to a Set: a reload
// carries each app's bucket over (with the new rate and burst), so reloading
// never refills anyone's bucket.
//
// Without a file there are two Sets of one app: Open (no authentication:
// every request is app "anonymous") and Single (PUBLISHER_AUTH_TOKEN: app
// "default"); both may publish to every exchange at any rate, the global
// PUBLISHER_ALLOWED_EXCHANGES aside, which applies to every app.
//
// Nothing here ever logs or returns a token, a digest or a token file's
// content: errors name the file, the app's index and name, and the field.
package apps

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// The names of the apps of the Sets without a file.
const (
	// Anonymous is the app of every request when no authentication is
	// configured (Open).
	Anonymous = "anonymous"
	// Default is the app of PUBLISHER_AUTH_TOKEN (Single).
	Default = "default"
)

// ErrBurst is Take's answer for more messages at once than the app's
// burst: they could never be taken together.
var ErrBurst = errors.New("apps: more messages at once than the app's burst")

// App is one app of a Set: its name, token digest, scope and rate. It is
// immutable but for its bucket, which is safe for concurrent use.
type App struct {
	name   string
	digest [sha256.Size]byte
	// everyExchange: exchanges held "*". Otherwise exchanges holds the AMQP
	// names the app may publish to ("" is the default exchange); empty
	// means none.
	everyExchange bool
	exchanges     map[string]struct{}
	// keys are the routing-key patterns; nil means every routing key.
	keys  []pattern
	limit rate.Limit // rate.Inf: no limit
	burst int        // 0 with no limit
	// bucket is the app's token bucket (nil with no limit). A Registry
	// replaces it, before the Set is in force, by the bucket the app's name
	// had in the previous Set.
	bucket *rate.Limiter
}

// Name is the app's name: a label value of the metrics and an attribute of
// the spans, from the configuration only (never from a request).
func (a *App) Name() string { return a.name }

// AllowsExchange reports whether the app may publish to exchange (its AMQP
// name: "" is the default exchange).
func (a *App) AllowsExchange(exchange string) bool {
	if a.everyExchange {
		return true
	}
	_, ok := a.exchanges[exchange]
	return ok
}

// AllowsRoutingKey reports whether key matches one of the app's routing-key
// patterns (every key does when it has none).
func (a *App) AllowsRoutingKey(key string) bool {
	if a.keys == nil {
		return true
	}
	for _, p := range a.keys {
		if p.match(key) {
			return true
		}
	}
	return false
}

// Limited reports whether the app has a rate.
func (a *App) Limited() bool { return a.bucket != nil }

// Burst is the most messages the app may publish at once (its bucket's
// size); 0 when it has no rate.
func (a *App) Burst() int { return a.burst }

// Rate is the app's rate in messages per second; +Inf when it has none.
func (a *App) Rate() float64 {
	if a.bucket == nil {
		return math.Inf(1)
	}
	return float64(a.limit)
}

// Take takes n tokens from the app's bucket at now when it holds them, and
// returns 0. Otherwise it takes none and returns how long until the bucket
// would hold n (at least 1ns; an estimate, since others take tokens
// meanwhile), or ErrBurst when n is more than the bucket ever holds. An app
// without a rate always returns 0.
func (a *App) Take(now time.Time, n int) (wait time.Duration, err error) {
	if a.bucket == nil || n <= 0 {
		return 0, nil
	}
	if n > a.burst {
		return 0, ErrBurst
	}
	if a.bucket.AllowN(now, n) {
		return 0, nil
	}
	missing := float64(n) - a.bucket.TokensAt(now)
	wait = time.Duration(math.Ceil(missing / float64(a.limit) * float64(time.Second)))
	return max(wait, time.Nanosecond), nil
}

// Reservation is one token reserved by Reserve.
type Reservation struct {
	r *rate.Reservation
}

// Reserve takes one token from the app's bucket at now, in advance if need
// be: the caller must wait the returned delay before it publishes (0: at
// once), or Cancel. The reservations of one app are served in the order they
// were made, each after the one before, so a waiting stream never publishes
// faster than the rate. An app without a rate returns 0.
func (a *App) Reserve(now time.Time) (time.Duration, Reservation) {
	if a.bucket == nil {
		return 0, Reservation{}
	}
	r := a.bucket.ReserveN(now, 1) // burst >= 1: always OK
	return r.DelayFrom(now), Reservation{r: r}
}

// Cancel gives the token back, as far as later reservations allow
// (rate.Reservation.CancelAt).
func (r Reservation) Cancel(now time.Time) {
	if r.r != nil {
		r.r.CancelAt(now)
	}
}

// Set is the apps in force: one version of the auth file, or one of the
// Sets without a file (Open, Single). It is immutable once in force.
type Set struct {
	apps []*App
	// open is the app of every request when the Set does not
	// authenticate (Open); nil otherwise.
	open *App
	// fp is a digest of every byte the Set was made from (the file and the
	// token files), to tell a change of the inputs.
	fp [sha256.Size]byte
	// warnings are what is allowed but likely a mistake (an app that can
	// publish nowhere), for the log.
	warnings []string
}

// Open is the Set without authentication: every request is app Anonymous,
// which may publish to every exchange at any rate.
func Open() *Set {
	a := &App{name: Anonymous, everyExchange: true, limit: rate.Inf}
	return &Set{apps: []*App{a}, open: a}
}

// Single is the Set of PUBLISHER_AUTH_TOKEN: one app, Default, with that
// token, which may publish to every exchange at any rate.
func Single(token string) *Set {
	a := &App{name: Default, digest: sha256.Sum256([]byte(token)), everyExchange: true, limit: rate.Inf}
	return &Set{apps: []*App{a}}
}

// Authenticates reports whether requests need a token; when it is false
// every request is Anonymous().
func (s *Set) Authenticates() bool { return s.open == nil }

// Anonymous is the app of every request of a Set that does not
// authenticate; nil for one that does.
func (s *Set) Anonymous() *App { return s.open }

// Lookup returns the app whose token has digest d (the SHA-256 of the
// bearer token presented), or nil. It compares d with every app's digest in
// constant time and without stopping at a match, so its time depends on the
// number of apps only: not on which app matched, nor on how many leading
// bytes of a digest did.
func (s *Set) Lookup(d [sha256.Size]byte) *App {
	if s.open != nil {
		return nil
	}
	found := 0 // index+1 of the match; digests are unique within a Set
	for i, a := range s.apps {
		eq := subtle.ConstantTimeCompare(a.digest[:], d[:])
		found = subtle.ConstantTimeSelect(eq, i+1, found)
	}
	if found == 0 {
		return nil
	}
	return s.apps[found-1]
}

// ByName returns the app called name, or nil.
func (s *Set) ByName(name string) *App {
	for _, a := range s.apps {
		if a.name == name {
			return a
		}
	}
	return nil
}

// Names are the names of the Set's apps, in the file's order.
func (s *Set) Names() []string {
	names := make([]string, len(s.apps))
	for i, a := range s.apps {
		names[i] = a.name
	}
	return names
}

// Warnings are what the Set allows but is likely a mistake, in words for
// the log (an app without exchanges can publish nowhere; a file without
// apps refuses every request).
func (s *Set) Warnings() []string { return s.warnings }
