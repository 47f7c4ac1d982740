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
// holder reports the outcome (Claim.Done, Claim.Forget), and
// later outcomes reach the entry through the Claim or, after a restart, by
// key (Store.Confirm, Store.Drop).
//
// What is kept, and for how long: an entry is removed Window after its
// outcome (Config.Window), an outcome that published nothing removes it at
// once (Claim.Forget: a retry is then processed as new), and beyond
// Config.MaxKeys entries the oldest goes first: the entry done longest ago,
// or, when none is done, the oldest open one (restored entries count as
// done when they were restored: Restore is called oldest first). Expiry
// needs no goroutine: each Begin, Restore and Len first removes the expired
// entries at the front of the done list, and every method treats its key's
// expired entry as absent (removing it), so an outcome reported after the
// window (Claim.Done, Confirm) does not bring an entry back.
//
// One mutex guards every entry; a call holds it for a map lookup and a few
// index moves. The entries hold no pointers: each is a fixed 96-byte slot
// in one slice (the key as a 16-byte hash, the fingerprint, the answer's
// status, its message id inline up to 39 bytes), found through a map from
// key hash to slot index, with the open and done lists linked by index, so
// the garbage collector never scans them however many keys are kept (a
// longer message id or an error's words, rare, sit in a small side map).
// Measured with 100000 keys kept (TestMemoryPerKey, BenchmarkGCWithKeys):
// about 140 bytes a key (the slot, the index's share, the slice's room to
// grow), and a garbage collection cycle 0.12–0.15 ms against 0.11–0.12 with
// no key, where the pointer-linked entries this replaced cost about 300
// bytes a key and made each cycle 9.3 ms. The slice grows to the most keys
// kept at once and is reused, not shrunk.
package idempotency

import (
	"math"
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

	mu    sync.Mutex
	index map[keyHash]int32
	slots []slot
	// free chains the unused slots through next (none: -1).
	free int32
	// far holds what does not fit a slot: a message id longer than
	// inlineID bytes, an answer's words.
	far map[int32]farAnswer
	// open holds the entries without an outcome, oldest first; done those
	// with one, in the order they got it (by doneAt, but for Restore's).
	open, done list
}

// keyHash is a Key's: the first 16 bytes of the SHA-256 of its scope and
// name, framed (Hasher). Two keys of one hash would share an entry; at 128
// bits no client finds another scope's key by chance or by search (a
// second preimage), and one that crafts a collision of two of its own keys
// only gets its own first answer for the other.
type keyHash [16]byte

func hashKey(k Key) keyHash {
	h := NewHasher()
	h.String(k.Scope)
	h.String(k.Name)
	return keyHash(h.Sum())
}

// state is where an entry is.
type state uint8

const (
	stateFree state = iota // in the free chain
	stateOpen
	stateDone
)

// inlineID is the longest message id a slot holds itself: the service's
// own (26 bytes, publisher.NewMessageID) and a UUID (36) fit.
const inlineID = 39

// slot is one entry, guarded by Store.mu: no pointers (the package doc).
type slot struct {
	key keyHash
	fp  Fingerprint
	// doneAt is when the outcome came (done entries), in Unix nanoseconds:
	// the entry expires at doneAt+window.
	doneAt     int64
	prev, next int32 // in its list (open, done, or the free chain: next)
	// gen counts the slot's uses, so that a Claim of an entry removed
	// since, its slot reused, changes nothing.
	gen   uint32
	code  uint16 // the answer's status (done entries)
	state state
	flags uint8
	idLen uint8 // the inline message id's length (not flagFarID)
	id    [inlineID]byte
}

const (
	// flagSpooled: done with 202 (durable, not confirmed yet); Confirm
	// makes it 200.
	flagSpooled uint8 = 1 << iota
	flagFarID         // the message id is in Store.far
	flagFarText       // the answer's words are in Store.far
)

// farAnswer is the part of an entry's answer kept out of its slot.
type farAnswer struct{ id, text string }

// list is a doubly linked list of slots by index (-1: none).
type list struct{ head, tail int32 }

var emptyList = list{head: -1, tail: -1}

// NewStore returns an empty Store.
func NewStore(cfg Config) *Store {
	s := &Store{window: cfg.Window, maxKeys: cfg.MaxKeys, now: cfg.Now, onLook: cfg.OnLookup, onEvict: cfg.OnEvict,
		index: map[keyHash]int32{}, free: -1, far: map[int32]farAnswer{}, open: emptyList, done: emptyList}
	if s.window <= 0 {
		s.window = DefaultWindow
	}
	if s.maxKeys <= 0 {
		s.maxKeys = DefaultMaxKeys
	}
	s.maxKeys = min(s.maxKeys, math.MaxInt32)
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
// its slot still holds its entry. The zero Claim (a request without a key)
// changes nothing either.
type Claim struct {
	s   *Store
	i   int32
	gen uint32
}

// Begin looks k up for a request of fingerprint fp. New: k was not known
// and is now claimed (open) for this request, with messageID (the message
// it publishes); any other Result leaves the store as it was and says what
// to answer (Answer: the first request's, or for Conflict its message id).
func (s *Store) Begin(k Key, fp Fingerprint, messageID string) (Claim, Result, Answer) {
	h := hashKey(k)
	now := s.now().UnixNano()
	s.mu.Lock()
	s.expireLocked(now)
	i, ok := s.lookupLocked(h, now)
	if ok {
		e := &s.slots[i]
		var res Result
		switch {
		case e.fp != fp:
			res = Mismatch
		case e.state == stateOpen:
			res = Conflict
		default:
			res = Replayed
		}
		var ans Answer
		if res == Replayed {
			ans = s.answerLocked(i)
		} else {
			ans = Answer{MessageID: s.idLocked(i)}
		}
		s.mu.Unlock()
		s.onLook(res)
		return Claim{}, res, ans
	}
	evicted := s.makeRoomLocked()
	i = s.allocLocked(h, fp, messageID)
	s.pushLocked(&s.open, i, stateOpen)
	c := Claim{s: s, i: i, gen: s.slots[i].gen}
	s.mu.Unlock()
	if evicted > 0 {
		s.onEvict(evicted)
	}
	return c, New, Answer{}
}

func (s *Store) expired(e *slot, now int64) bool { return now-e.doneAt >= int64(s.window) }

// lookupLocked is the slot of key h, if it has one that has not expired: an
// expired one (behind a younger one in the done list: Restore, Confirm) is
// removed.
func (s *Store) lookupLocked(h keyHash, now int64) (int32, bool) {
	i, ok := s.index[h]
	if ok && s.expiredAt(i, now) {
		s.removeLocked(i)
		return -1, false
	}
	return i, ok
}

// expiredAt reports whether slot i is a done entry whose window has passed.
func (s *Store) expiredAt(i int32, now int64) bool {
	return s.slots[i].state == stateDone && s.expired(&s.slots[i], now)
}

// allocLocked takes a free slot (or a new one) for key h, its fingerprint
// and message id, and indexes it; the caller puts it in a list.
func (s *Store) allocLocked(h keyHash, fp Fingerprint, messageID string) int32 {
	var i int32
	if s.free >= 0 {
		i = s.free
		s.free = s.slots[i].next
	} else {
		s.slots = append(s.slots, slot{})
		i = int32(len(s.slots) - 1)
	}
	s.slots[i] = slot{key: h, fp: fp, gen: s.slots[i].gen + 1}
	s.setIDLocked(i, messageID)
	s.index[h] = i
	return i
}

// makeRoomLocked removes the oldest entries until one more fits within
// maxKeys, and returns how many it removed.
func (s *Store) makeRoomLocked() int {
	n := 0
	for len(s.index) >= s.maxKeys {
		i := s.done.head
		if i < 0 {
			i = s.open.head
		}
		s.removeLocked(i)
		n++
	}
	return n
}

// expireLocked removes the done entries whose window has passed, from the
// front of the done list.
func (s *Store) expireLocked(now int64) {
	for i := s.done.head; i >= 0 && s.expired(&s.slots[i], now); i = s.done.head {
		s.removeLocked(i)
	}
}

func (s *Store) listOf(st state) *list {
	if st == stateOpen {
		return &s.open
	}
	return &s.done
}

// pushLocked appends slot i, in no list, to l as st.
func (s *Store) pushLocked(l *list, i int32, st state) {
	e := &s.slots[i]
	e.state, e.prev, e.next = st, l.tail, -1
	if l.tail >= 0 {
		s.slots[l.tail].next = i
	} else {
		l.head = i
	}
	l.tail = i
}

// unlinkLocked takes slot i out of its list (open or done).
func (s *Store) unlinkLocked(i int32) {
	e := &s.slots[i]
	l := s.listOf(e.state)
	if e.prev >= 0 {
		s.slots[e.prev].next = e.next
	} else {
		l.head = e.next
	}
	if e.next >= 0 {
		s.slots[e.next].prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (s *Store) removeLocked(i int32) {
	s.unlinkLocked(i)
	e := &s.slots[i]
	delete(s.index, e.key)
	if e.flags&(flagFarID|flagFarText) != 0 {
		delete(s.far, i)
	}
	e.state, e.flags, e.next = stateFree, 0, s.free
	s.free = i
}

func (s *Store) idLocked(i int32) string {
	e := &s.slots[i]
	if e.flags&flagFarID != 0 {
		return s.far[i].id
	}
	return string(e.id[:e.idLen])
}

func (s *Store) idIsLocked(i int32, id string) bool {
	e := &s.slots[i]
	if e.flags&flagFarID != 0 {
		return s.far[i].id == id
	}
	return string(e.id[:e.idLen]) == id
}

func (s *Store) setIDLocked(i int32, id string) {
	e := &s.slots[i]
	if len(id) <= inlineID {
		e.idLen = uint8(copy(e.id[:], id))
		if e.flags&flagFarID != 0 {
			e.flags &^= flagFarID
			s.setFarLocked(i, func(f *farAnswer) { f.id = "" })
		}
		return
	}
	e.flags |= flagFarID
	e.idLen = 0
	s.setFarLocked(i, func(f *farAnswer) { f.id = strings.Clone(id) })
}

func (s *Store) setTextLocked(i int32, text string) {
	e := &s.slots[i]
	if text == "" {
		if e.flags&flagFarText != 0 {
			e.flags &^= flagFarText
			s.setFarLocked(i, func(f *farAnswer) { f.text = "" })
		}
		return
	}
	e.flags |= flagFarText
	s.setFarLocked(i, func(f *farAnswer) { f.text = text })
}

// setFarLocked changes slot i's far part, removing it when it is empty.
func (s *Store) setFarLocked(i int32, set func(*farAnswer)) {
	f := s.far[i]
	set(&f)
	if f == (farAnswer{}) {
		delete(s.far, i)
		return
	}
	s.far[i] = f
}

func (s *Store) answerLocked(i int32) Answer {
	e := &s.slots[i]
	a := Answer{Code: int(e.code), MessageID: s.idLocked(i)}
	if e.flags&flagFarText != 0 {
		a.Text = s.far[i].text
	}
	return a
}

// liveLocked reports whether the claim's slot still holds its entry.
func (c Claim) liveLocked() bool {
	return c.s != nil && c.s.slots[c.i].gen == c.gen && c.s.slots[c.i].state != stateFree
}

// Valid reports whether c holds an entry (false for the zero Claim).
func (c Claim) Valid() bool { return c.s != nil }

// Done records the outcome of the claimed request, a retry's answer from now
// on: ans (its MessageID, when empty, replaced by the entry's: the claim's,
// or the one an earlier spooled outcome named), kept for the
// window. spooled marks a 202 (durable, not confirmed yet) that Confirm may
// turn into 200. An entry done already (a late outcome came first) is left
// as it is unless it was spooled.
func (c Claim) Done(ans Answer, spooled bool) {
	if c.s == nil {
		return
	}
	s := c.s
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.liveLocked() {
		return
	}
	if s.expiredAt(c.i, now) {
		s.removeLocked(c.i)
		return
	}
	if e := &s.slots[c.i]; e.state == stateDone && e.flags&flagSpooled == 0 {
		return
	}
	s.doneLocked(c.i, ans, spooled, now)
}

func (s *Store) doneLocked(i int32, ans Answer, spooled bool, at int64) {
	if ans.MessageID != "" && !s.idIsLocked(i, ans.MessageID) {
		s.setIDLocked(i, ans.MessageID)
	}
	s.setTextLocked(i, ans.Text)
	s.unlinkLocked(i)
	e := &s.slots[i]
	e.code, e.doneAt = uint16(ans.Code), at
	if spooled {
		e.flags |= flagSpooled
	} else {
		e.flags &^= flagSpooled
	}
	s.pushLocked(&s.done, i, stateDone)
}

// Forget removes the claimed entry: its request published nothing (not
// taken, not published, refused), so a retry is processed as new.
func (c Claim) Forget() {
	if c.s == nil {
		return
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.liveLocked() {
		c.s.removeLocked(c.i) // expired or not: removed
	}
}

// Confirm is the broker's confirm of a spooled message (after the request
// was answered, or a restart): the entry of k, if it is the one of
// messageID, answers 200 from now on, for the window from now.
func (s *Store) Confirm(k Key, messageID string) {
	h := hashKey(k)
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.lookupLocked(h, now); ok && s.idIsLocked(i, messageID) {
		s.doneLocked(i, Answer{Code: 200}, false, now)
	}
}

// Drop removes the entry of k if it is the one of messageID: the message
// was refused for good after the request was answered (a spooled message
// dead-lettered), so nothing was published.
func (s *Store) Drop(k Key, messageID string) {
	h := hashKey(k)
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.lookupLocked(h, now); ok && s.idIsLocked(i, messageID) {
		s.removeLocked(i)
	}
}

// Restore puts back a done entry found after a restart (a spooled record's,
// or a confirmed one's kept on disk): ans, done at doneAt (expired already:
// nothing is restored). It does not replace an entry of k with an answer
// other than spooled. Restores count against MaxKeys like Begin.
func (s *Store) Restore(k Key, fp Fingerprint, ans Answer, spooled bool, doneAt time.Time) {
	at, now := doneAt.UnixNano(), s.now().UnixNano()
	if now-at >= int64(s.window) {
		return
	}
	h := hashKey(k)
	s.mu.Lock()
	s.expireLocked(now)
	if i, ok := s.lookupLocked(h, now); ok {
		if e := &s.slots[i]; e.state == stateDone && e.flags&flagSpooled != 0 && !spooled && e.fp == fp {
			s.doneLocked(i, ans, false, at)
		}
		s.mu.Unlock()
		return
	}
	evicted := s.makeRoomLocked()
	i := s.allocLocked(h, fp, ans.MessageID)
	s.pushLocked(&s.open, i, stateOpen)
	s.doneLocked(i, ans, spooled, at)
	s.mu.Unlock()
	if evicted > 0 {
		s.onEvict(evicted)
	}
}

// Len is the number of keys kept now (expired ones removed first).
func (s *Store) Len() int {
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	return len(s.index)
}
