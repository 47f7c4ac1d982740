// Package idempotency remembers the publishes a client marked with an
// idempotency key, so that its retry is answered from memory instead of
// publishing the message again: the IETF httpapi draft "The Idempotency-Key
// HTTP Header Field", with what it leaves to the server decided in
// docs/http-api.md ("Idempotent publishing").
//
// A Store holds one entry per key (Key: the client's key within its scope,
// the app of its token) with the fingerprint of the request that first used
// it (Fingerprint: what the message would be, not its trace context or a
// generated id). An entry is open while its message's outcome is not known
// (the first request is waiting for the broker, or answered "may still reach
// the broker"), and done once it is: it then holds the answer a retry gets
// again. Begin looks a key up and claims it when it is new; the claim's
// holder reports the outcome (Claim.Done, Claim.Open, Claim.Forget), and
// later outcomes reach the entry through the Claim or, after a restart, by
// key (Store.Confirm, Store.Drop).
//
// What is kept, and for how long: an entry is removed Window after its
// outcome (Config.Window), an outcome that published nothing removes it at
// once (Claim.Forget: a retry is then processed as new), and beyond
// Config.MaxKeys entries the oldest goes first: the entry done longest ago,
// or, when none is done, the oldest open one. Expiry needs no goroutine:
// each Begin (and Len) first removes the expired entries at the front of the
// done list, and a lookup treats an expired entry as absent.
//
// One mutex guards every entry; a call holds it for a map lookup and a few
// pointer moves (no allocation but the new entry's), so the store stays off
// the publish path's profile (docs/performance.md has the measurement).
package idempotency

import (
	"strings"
	"sync"
	"time"
)

// Defaults of Config (PUBLISHER_IDEMPOTENCY_WINDOW and
// PUBLISHER_IDEMPOTENCY_MAX_KEYS).
const (
	DefaultWindow  = time.Hour
	DefaultMaxKeys = 100_000
)

// Key is a client's idempotency key within its scope: requests of different
// scopes (apps) never share an entry, whatever key they send.
type Key struct {
	Scope string // the app
	Name  string // the client's key (CheckKey)
}

// Answer is what a request was answered, to be given again: the status, the
// message id, and the error's words for a status other than 200 and 202.
type Answer struct {
	Code      int
	MessageID string
	Text      string
}

// Result is what Begin found for a key.
type Result uint8

// The results of Begin.
const (
	// New: the key was not known (or had expired); the request is to be
	// processed and the Claim holds its entry.
	New Result = iota
	// Replayed: the same request was answered before: give its Answer
	// again, publish nothing.
	Replayed
	// Conflict: the same request is still waiting for its outcome (409):
	// Answer.MessageID names its message.
	Conflict
	// Mismatch: the key was used for a different request (422).
	Mismatch
)

func (r Result) String() string {
	switch r {
	case New:
		return "new"
	case Replayed:
		return "replayed"
	case Conflict:
		return "conflict"
	case Mismatch:
		return "mismatch"
	}
	return "unknown"
}

// Config configures a Store; zero values mean the defaults.
type Config struct {
	// Window is how long a key is kept after its outcome. Default
	// DefaultWindow.
	Window time.Duration
	// MaxKeys bounds the keys kept (open and done); beyond it the oldest
	// goes first. Default DefaultMaxKeys.
	MaxKeys int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnLookup, if set, is called (outside the store's lock) with each
	// Begin's result but New: the replays, conflicts and mismatches.
	OnLookup func(Result)
	// OnEvict, if set, is called (outside the lock) with the number of
	// keys removed to stay within MaxKeys (never for expiry).
	OnEvict func(n int)
}

// Store is the keys and their answers. Its methods are safe for concurrent
// use.
type Store struct {
	window  time.Duration
	maxKeys int
	now     func() time.Time
	onLook  func(Result)
	onEvict func(int)

	mu sync.Mutex
	m  map[Key]*entry
	// open holds the entries without an outcome, oldest first; done those
	// with one, in the order they got it (by doneAt, but for Restore's).
	open, done list
}

// state is where an entry is.
type state uint8

const (
	stateOpen state = iota + 1
	stateDone
)

// entry is one key's: guarded by Store.mu.
type entry struct {
	key   Key
	fp    Fingerprint
	ans   Answer
	state state
	// spooled: done with 202 (durable, not confirmed yet); Confirm makes
	// it 200.
	spooled bool
	// doneAt is when the outcome came (done entries): it expires at
	// doneAt+window.
	doneAt     time.Time
	prev, next *entry
	in         *list
}

// list is an intrusive doubly linked list of entries (no allocation per
// element, unlike container/list).
type list struct{ head, tail *entry }

func (l *list) push(e *entry) {
	e.in, e.prev, e.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
}

func (l *list) remove(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next, e.in = nil, nil, nil
}

// NewStore returns an empty Store.
func NewStore(cfg Config) *Store {
	s := &Store{window: cfg.Window, maxKeys: cfg.MaxKeys, now: cfg.Now, onLook: cfg.OnLookup, onEvict: cfg.OnEvict,
		m: map[Key]*entry{}}
	if s.window <= 0 {
		s.window = DefaultWindow
	}
	if s.maxKeys <= 0 {
		s.maxKeys = DefaultMaxKeys
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.onLook == nil {
		s.onLook = func(Result) {}
	}
	if s.onEvict == nil {
		s.onEvict = func(int) {}
	}
	return s
}

// Window is the store's window (Config.Window, or its default).
func (s *Store) Window() time.Duration { return s.window }

// MaxKeys is the store's bound (Config.MaxKeys, or its default).
func (s *Store) MaxKeys() int { return s.maxKeys }

// Claim is a key claimed by Begin for the request that will report its
// outcome. A Claim whose entry was removed since (expired, evicted,
// forgotten and claimed again) changes nothing: each method checks that
// the key still maps to its entry. The zero Claim (a request without a key)
// changes nothing either.
type Claim struct {
	s *Store
	e *entry
}

// Begin looks k up for a request of fingerprint fp. New: k was not known
// and is now claimed (open) for this request, with messageID (the message
// it publishes); any other Result leaves the store as it was and says what
// to answer (Answer: the first request's, or for Conflict its message id).
func (s *Store) Begin(k Key, fp Fingerprint, messageID string) (Claim, Result, Answer) {
	now := s.now()
	s.mu.Lock()
	s.expireLocked(now)
	if e := s.m[k]; e != nil && e.state == stateDone && !now.Before(e.doneAt.Add(s.window)) {
		s.removeLocked(e) // expired behind a younger one (Restore, Confirm)
	}
	if e := s.m[k]; e != nil {
		var res Result
		switch {
		case e.fp != fp:
			res = Mismatch
		case e.state == stateOpen:
			res = Conflict
		default:
			res = Replayed
		}
		ans := e.ans
		s.mu.Unlock()
		if res != Replayed {
			ans = Answer{MessageID: ans.MessageID}
		}
		s.onLook(res)
		return Claim{}, res, ans
	}
	evicted := s.makeRoomLocked()
	e := &entry{key: Key{Scope: k.Scope, Name: strings.Clone(k.Name)}, fp: fp, state: stateOpen,
		ans: Answer{MessageID: strings.Clone(messageID)}}
	s.m[e.key] = e
	s.open.push(e)
	s.mu.Unlock()
	if evicted > 0 {
		s.onEvict(evicted)
	}
	return Claim{s: s, e: e}, New, Answer{}
}

// makeRoomLocked removes the oldest entries until one more fits within
// maxKeys, and returns how many it removed.
func (s *Store) makeRoomLocked() int {
	n := 0
	for len(s.m) >= s.maxKeys {
		e := s.done.head
		if e == nil {
			e = s.open.head
		}
		s.removeLocked(e)
		n++
	}
	return n
}

// expireLocked removes the done entries whose window has passed, from the
// front of the done list.
func (s *Store) expireLocked(now time.Time) {
	for e := s.done.head; e != nil && !now.Before(e.doneAt.Add(s.window)); e = s.done.head {
		s.removeLocked(e)
	}
}

func (s *Store) removeLocked(e *entry) {
	e.in.remove(e)
	delete(s.m, e.key)
}

// live reports whether the claim's entry is still the one its key maps to.
func (c Claim) liveLocked() bool { return c.e != nil && c.e.in != nil && c.s.m[c.e.key] == c.e }

// Valid reports whether c holds an entry (false for the zero Claim).
func (c Claim) Valid() bool { return c.e != nil }

// Done records the outcome of the claimed request, a retry's answer from now
// on: ans (its MessageID replaced by the claim's when empty), kept for the
// window. spooled marks a 202 (durable, not confirmed yet) that Confirm may
// turn into 200. An entry done already (a late outcome came first) is left
// as it is unless it was spooled.
func (c Claim) Done(ans Answer, spooled bool) {
	if c.e == nil {
		return
	}
	s := c.s
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.liveLocked() || (c.e.state == stateDone && !c.e.spooled) {
		return
	}
	s.doneLocked(c.e, ans, spooled, now)
}

func (s *Store) doneLocked(e *entry, ans Answer, spooled bool, now time.Time) {
	if ans.MessageID == "" {
		ans.MessageID = e.ans.MessageID
	} else if ans.MessageID != e.ans.MessageID {
		ans.MessageID = strings.Clone(ans.MessageID)
	}
	e.in.remove(e)
	e.ans, e.state, e.spooled, e.doneAt = ans, stateDone, spooled, now
	s.done.push(e)
}

// Forget removes the claimed entry: its request published nothing (not
// taken, not published, refused), so a retry is processed as new.
func (c Claim) Forget() {
	if c.e == nil {
		return
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.liveLocked() {
		c.s.removeLocked(c.e)
	}
}

// Confirm is the broker's confirm of a spooled message (after the request
// was answered, or a restart): the entry of k, if it is the one of
// messageID, answers 200 from now on, for the window from now.
func (s *Store) Confirm(k Key, messageID string) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil || e.ans.MessageID != messageID {
		return
	}
	s.doneLocked(e, Answer{Code: 200}, false, now)
}

// Drop removes the entry of k if it is the one of messageID: the message
// was refused for good after the request was answered (a spooled message
// dead-lettered), so nothing was published.
func (s *Store) Drop(k Key, messageID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[k]; e != nil && e.ans.MessageID == messageID {
		s.removeLocked(e)
	}
}

// Restore puts back a done entry found after a restart (a spooled record's,
// or a confirmed one's kept on disk): ans, done at doneAt (expired already:
// nothing is restored). It does not replace an entry of k with an answer
// other than spooled. Restores count against MaxKeys like Begin.
func (s *Store) Restore(k Key, fp Fingerprint, ans Answer, spooled bool, doneAt time.Time) {
	now := s.now()
	if !now.Before(doneAt.Add(s.window)) {
		return
	}
	s.mu.Lock()
	if e := s.m[k]; e != nil {
		if e.state == stateDone && e.spooled && !spooled && e.fp == fp {
			s.doneLocked(e, ans, false, doneAt)
		}
		s.mu.Unlock()
		return
	}
	evicted := s.makeRoomLocked()
	e := &entry{key: Key{Scope: k.Scope, Name: strings.Clone(k.Name)}, fp: fp, ans: Answer{MessageID: strings.Clone(ans.MessageID)}}
	s.m[e.key] = e
	s.open.push(e)
	s.doneLocked(e, ans, spooled, doneAt)
	s.mu.Unlock()
	if evicted > 0 {
		s.onEvict(evicted)
	}
}

// Len is the number of keys kept now (expired ones removed first).
func (s *Store) Len() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	return len(s.m)
}
