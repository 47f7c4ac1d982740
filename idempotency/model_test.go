package idempotency

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// A model-based test of Store: a reference model of what the doc comments
// of store.go promise, written as plainly as possible (a map and linear
// scans, no lists), and a driver that applies one random sequence of
// operations to a Store and to the model and compares them after each.
//
// What the model holds, per key (Key: "requests of different scopes (apps)
// never share an entry"): the state (open or done), the fingerprint, the
// answer, the spooled flag, when it got its outcome (doneAt), an identity
// (a Claim's entry) and its place in the order of events (order: when it was
// claimed while open, when it got its latest outcome once done).
//
// The rules, each from a doc comment of store.go:
//
//   - Expiry (package doc): "an entry is removed Window after its outcome"
//     (expired when now >= doneAt+Window), lazily: "each Begin (and Len)
//     first removes the expired entries at the front of the done list" (the
//     done entries by order: the front is the one that got its outcome
//     first; removal stops at the first one not expired), "and a lookup
//     treats an expired entry as absent" (Begin: an expired entry of its key
//     is removed even behind a younger one). Open entries never expire.
//   - Eviction (package doc, Config.MaxKeys, Config.OnEvict): a new entry
//     (Begin's or Restore's) first removes, while the store holds MaxKeys
//     entries, "the entry done longest ago" (the front of the done list, by
//     order), "or, when none is done, the oldest open one", each counted
//     through OnEvict (expiry never is).
//   - Begin: New (the key was not known or had expired) claims it, open,
//     with messageID; otherwise the store is unchanged and the Result is
//     Mismatch (another fingerprint, whatever the state), Conflict (open) or
//     Replayed (done), counted through OnLookup; Replayed's Answer is the
//     entry's, Conflict's and Mismatch's only its MessageID.
//   - Claim: "A Claim whose entry was removed since (expired, evicted,
//     forgotten and claimed again) changes nothing", nor does the zero Claim.
//     Done records ans (its empty MessageID replaced by the entry's message
//     id: the claim's, or the one a previous spooled outcome named), spooled,
//     doneAt now; "An entry done already ... is left as it is unless it was
//     spooled". Forget removes the entry.
//   - Confirm: the entry of k, if its message id is messageID (in any
//     state), "answers 200 from now on, for the window from now": Answer{Code:
//     200} with its message id, not spooled.
//   - Drop: removes the entry of k if its message id is messageID.
//   - Restore: nothing when doneAt+Window has passed already; with an entry
//     of k, only a spooled done one of the same fingerprint is upgraded by a
//     non-spooled answer (doneAt as given: "It does not replace an entry of k
//     with an answer other than spooled"); otherwise a new done entry
//     (evicting like Begin: "Restores count against MaxKeys like Begin").
//   - Len: the entries kept after the expiry above.
//
// Where the doc comments leave room, the model does what the store does:
//
//   - The done list is in the order the entries got their (latest) outcome,
//     Restore's included: Store's field comment says "by doneAt, but for
//     Restore's" (the relay restores oldest first). A restored entry done in
//     the past therefore sits behind younger ones: it is evicted after them,
//     Len counts it once expired until the entries before it expire (Len:
//     "expired ones removed first", the package doc: "at the front of the
//     done list"), and only a method given its own key removes it earlier.
//   - Every method first removes its own key's expired entry (the package
//     doc: "every method treats its key's expired entry as absent"); Begin,
//     Restore and Len also expire the front of the done list first, so an
//     eviction never counts an entry at the front whose window has passed.

// modelWindow is the window of the stores the driver makes.
const modelWindow = time.Minute

type modelState uint8

const (
	modelOpen modelState = iota + 1
	modelDone
)

func (s modelState) String() string {
	if s == modelOpen {
		return "open"
	}
	return "done"
}

// modelEntry is one key's entry in the model.
type modelEntry struct {
	key     Key
	id      int // identity, for the Claims: never reused
	state   modelState
	fp      Fingerprint
	ans     Answer
	spooled bool
	doneAt  time.Duration // since the start of the clock (done entries)
	order   int           // when it was claimed (open) or got its latest outcome (done)
}

// modelClaim is a Claim in the model: the key and the identity of the entry
// claimed; id 0 is the zero Claim.
type modelClaim struct {
	key Key
	id  int
}

// model is the reference Store.
type model struct {
	window  time.Duration
	maxKeys int

	now     time.Duration // since the start of the clock
	entries map[Key]*modelEntry
	lastID  int
	ticks   int // the order of events
	evicted int
	lookups [4]int // by Result
}

func newModel(window time.Duration, maxKeys int) *model {
	return &model{window: window, maxKeys: maxKeys, entries: map[Key]*modelEntry{}}
}

func (m *model) tick() int {
	m.ticks++
	return m.ticks
}

func (m *model) expired(e *modelEntry) bool {
	return e.state == modelDone && m.now >= e.doneAt+m.window
}

// oldest is the entry of state st with the smallest order, nil if none: the
// front of the store's open or done list.
func (m *model) oldest(st modelState) *modelEntry {
	var o *modelEntry
	for _, e := range m.entries {
		if e.state == st && (o == nil || e.order < o.order) {
			o = e
		}
	}
	return o
}

// expireFront removes the expired done entries from the front of the done
// list, stopping at the first one that has not expired.
func (m *model) expireFront() {
	for {
		e := m.oldest(modelDone)
		if e == nil || !m.expired(e) {
			return
		}
		delete(m.entries, e.key)
	}
}

// expireKey removes k's entry if it has expired (not an eviction).
func (m *model) expireKey(k Key) {
	if e := m.entries[k]; e != nil && m.expired(e) {
		delete(m.entries, k)
	}
}

// makeRoom evicts until one more entry fits within maxKeys.
func (m *model) makeRoom() {
	for len(m.entries) >= m.maxKeys {
		e := m.oldest(modelDone)
		if e == nil {
			e = m.oldest(modelOpen)
		}
		delete(m.entries, e.key)
		m.evicted++
	}
}

// setDone gives e its outcome: ans (its empty MessageID replaced by e's).
func (m *model) setDone(e *modelEntry, ans Answer, spooled bool, doneAt time.Duration) {
	if ans.MessageID == "" {
		ans.MessageID = e.ans.MessageID
	}
	e.state, e.ans, e.spooled, e.doneAt = modelDone, ans, spooled, doneAt
	e.order = m.tick()
}

func (m *model) begin(k Key, fp Fingerprint, messageID string) (modelClaim, Result, Answer) {
	m.expireFront()
	m.expireKey(k)
	if e := m.entries[k]; e != nil {
		res := Replayed
		if e.fp != fp {
			res = Mismatch
		} else if e.state == modelOpen {
			res = Conflict
		}
		m.lookups[res]++
		if res == Replayed {
			return modelClaim{}, res, e.ans
		}
		return modelClaim{}, res, Answer{MessageID: e.ans.MessageID}
	}
	m.makeRoom()
	m.lastID++
	m.entries[k] = &modelEntry{key: k, id: m.lastID, state: modelOpen, fp: fp,
		ans: Answer{MessageID: messageID}, order: m.tick()}
	return modelClaim{key: k, id: m.lastID}, New, Answer{}
}

// live is the claim's entry if its key still maps to it, else nil.
func (m *model) live(c modelClaim) *modelEntry {
	if c.id == 0 {
		return nil
	}
	if e := m.entries[c.key]; e == nil || e.id != c.id {
		return nil // stale: another entry of its key is not touched
	}
	m.expireKey(c.key) // its own entry, expired: removed
	return m.entries[c.key]
}

func (m *model) done(c modelClaim, ans Answer, spooled bool) {
	e := m.live(c)
	if e == nil || (e.state == modelDone && !e.spooled) {
		return
	}
	m.setDone(e, ans, spooled, m.now)
}

func (m *model) forget(c modelClaim) {
	if e := m.live(c); e != nil {
		delete(m.entries, e.key)
	}
}

func (m *model) confirm(k Key, messageID string) {
	m.expireKey(k)
	if e := m.entries[k]; e != nil && e.ans.MessageID == messageID {
		m.setDone(e, Answer{Code: 200}, false, m.now)
	}
}

func (m *model) drop(k Key, messageID string) {
	m.expireKey(k)
	if e := m.entries[k]; e != nil && e.ans.MessageID == messageID {
		delete(m.entries, k)
	}
}

func (m *model) restore(k Key, fp Fingerprint, ans Answer, spooled bool, doneAt time.Duration) {
	if m.now >= doneAt+m.window {
		return
	}
	m.expireFront()
	m.expireKey(k)
	if e := m.entries[k]; e != nil {
		if e.state == modelDone && e.spooled && !spooled && e.fp == fp {
			m.setDone(e, ans, false, doneAt)
		}
		return
	}
	m.makeRoom()
	m.lastID++
	m.entries[k] = &modelEntry{key: k, id: m.lastID, state: modelDone, fp: fp,
		ans: ans, spooled: spooled, doneAt: doneAt, order: m.tick()}
}

func (m *model) length() int {
	m.expireFront()
	return len(m.entries)
}

// The driver's vocabulary: few keys (two scopes, names of which two share a
// 40-byte prefix), fingerprints and message ids (empty, short, and 39, 40
// and 42 bytes sharing their first 39), so that they collide often.
var (
	modelKeys = func() (ks []Key) {
		long := strings.Repeat("k", 40)
		for _, scope := range []string{"app", "other"} {
			for _, name := range []string{"k1", "k2", long + "a", long + "b"} {
				ks = append(ks, Key{Scope: scope, Name: name})
			}
		}
		return ks
	}()
	modelFPs   = []Fingerprint{fp("a"), fp("b"), fp("c")}
	modelIDs   = []string{"", "m1", "m2", strings.Repeat("m", 39), strings.Repeat("m", 40), strings.Repeat("m", 40) + "-1", strings.Repeat("m", 40) + "-2"}
	modelCodes = []int{200, 202, 502, 504}
	modelTexts = []string{"", "refused", "may still reach the broker"}
	// modelSteps are the clock's advances, modelAgo Restore's doneAt
	// (from now): both hit the window's boundary exactly and 1 ns off.
	modelSteps = []time.Duration{time.Nanosecond, time.Second, modelWindow / 2, modelWindow - time.Nanosecond, modelWindow, 2 * modelWindow}
	modelAgo   = []time.Duration{0, -time.Second, -modelWindow / 2, -modelWindow + time.Nanosecond, -modelWindow, -2 * modelWindow}
)

type modelOpKind uint8

const (
	opBegin modelOpKind = iota
	opDone
	opForget
	opConfirm
	opDrop
	opRestore
	opAdvance
	opLen
)

// modelOpTable maps an op byte (mod 16) to its kind, Begin the most often.
var modelOpTable = [16]modelOpKind{
	opBegin, opBegin, opBegin, opBegin, opBegin,
	opDone, opDone, opForget, opConfirm, opDrop,
	opRestore, opRestore, opAdvance, opAdvance, opLen, opBegin,
}

// Op bytes of each kind, for the seeds.
const (
	bBegin   = 0
	bDone    = 5
	bForget  = 7
	bConfirm = 8
	bDrop    = 9
	bRestore = 10
	bAdvance = 12
	bLen     = 14
)

// modelOp is one operation, decoded.
type modelOp struct {
	kind    modelOpKind
	key     Key
	fp      int // index in modelFPs
	id      string
	claim   byte // which claim (Done, Forget): see pickClaim
	ans     Answer
	spooled bool
	d       time.Duration // Advance's step, or Restore's doneAt from now
}

// byteReader hands out the fuzz input a byte at a time, zeros past its end.
type byteReader struct {
	data []byte
	i    int
}

func (r *byteReader) more() bool { return r.i < len(r.data) }

func (r *byteReader) next() byte {
	if r.i >= len(r.data) {
		return 0
	}
	b := r.data[r.i]
	r.i++
	return b
}

// answer decodes an Answer and a spooled flag from two bytes; its
// MessageID is empty half the time (Done: the claim's).
func (r *byteReader) answer() (Answer, bool) {
	b, id := r.next(), r.next()
	ans := Answer{Code: modelCodes[b%4], Text: modelTexts[b/4%3]}
	if id%2 == 1 {
		ans.MessageID = modelIDs[id/2%7]
	}
	return ans, b/12%2 == 1
}

// decodeOp reads one operation: an op byte, then its arguments' bytes.
// Confirm and Drop take half the time the message id last given for their
// key (recent: by a Begin that was New, a Done or a Restore), so that they
// find their entry more often than by chance.
func decodeOp(r *byteReader, recent map[Key]string) modelOp {
	op := modelOp{kind: modelOpTable[r.next()%16]}
	switch op.kind {
	case opBegin:
		op.key, op.fp, op.id = modelKeys[r.next()%8], int(r.next()%3), modelIDs[r.next()%7]
	case opDone:
		op.claim = r.next()
		op.ans, op.spooled = r.answer()
	case opForget:
		op.claim = r.next()
	case opConfirm, opDrop:
		op.key = modelKeys[r.next()%8]
		if b := r.next(); b%2 == 0 {
			op.id = recent[op.key]
		} else {
			op.id = modelIDs[b/2%7]
		}
	case opRestore:
		op.key, op.fp = modelKeys[r.next()%8], int(r.next()%3)
		op.ans, op.spooled = r.answer()
		op.d = modelAgo[r.next()%6]
	case opAdvance:
		op.d = modelSteps[r.next()%6]
	}
	return op
}

func keyString(k Key) string { return fmt.Sprintf("%s/%s", k.Scope, k.Name) }

func (op modelOp) String(claim string) string {
	switch op.kind {
	case opBegin:
		return fmt.Sprintf("Begin(%s, fp%d, %q)", keyString(op.key), op.fp, op.id)
	case opDone:
		return fmt.Sprintf("%s.Done(%+v, spooled=%v)", claim, op.ans, op.spooled)
	case opForget:
		return claim + ".Forget()"
	case opConfirm:
		return fmt.Sprintf("Confirm(%s, %q)", keyString(op.key), op.id)
	case opDrop:
		return fmt.Sprintf("Drop(%s, %q)", keyString(op.key), op.id)
	case opRestore:
		return fmt.Sprintf("Restore(%s, fp%d, %+v, spooled=%v, now%+v)", keyString(op.key), op.fp, op.ans, op.spooled, op.d)
	case opAdvance:
		return fmt.Sprintf("clock +%v", op.d)
	case opLen:
		return "Len()"
	}
	return "?"
}

// claimPair is a Claim of the store and the model's for it.
type claimPair struct {
	op    int // the Begin that made it; -1 for the zero Claim
	real  Claim
	model modelClaim
}

func (c claimPair) String() string {
	if c.op < 0 {
		return "zero Claim"
	}
	return fmt.Sprintf("claim(op %d)", c.op)
}

// pickClaim picks one of the 8 latest claims, or (b%9 == 8, or fewer claims)
// the zero Claim, which claims[0] is.
func pickClaim(claims []claimPair, b byte) claimPair {
	i := len(claims) - 1 - int(b%9)
	if b%9 == 8 || i < 1 {
		return claims[0]
	}
	return claims[i]
}

// modelOutcome is what the driver compares after each operation.
type modelOutcome struct {
	Result  Result // Begin's
	Valid   bool   // Begin's Claim.Valid
	Answer  Answer // Begin's
	Len     int    // -1: Len not called
	Evicted int    // the sum of OnEvict's n
	Lookups [4]int // OnLookup's calls by Result
}

func (o modelOutcome) format(begin bool) string {
	s := fmt.Sprintf("Len %d, evicted %d, lookups (new, replayed, conflict, mismatch) %v", o.Len, o.Evicted, o.Lookups)
	if begin {
		s = fmt.Sprintf("%v, valid claim %v, %+v; %s", o.Result, o.Valid, o.Answer, s)
	}
	return s
}

// modelStep is one operation done, for a failure's trace.
type modelStep struct {
	now   time.Duration // the clock after it
	op    modelOp
	claim claimPair // Done's and Forget's, or the claim Begin made
}

func (st modelStep) String() string {
	s := st.op.String(st.claim.String())
	if st.op.kind == opBegin && st.claim.op >= 0 {
		s += " -> " + st.claim.String()
	}
	return s
}

// runStoreModel applies the operations data decodes to (at most maxOps) to
// a Store and to the model, failing at their first difference. Its first
// byte picks MaxKeys (1 to 6) and whether Len is compared after every
// operation or only as an operation of its own (Len removes expired
// entries: calling it after each operation would hide the states where
// they wait for the next Begin).
func runStoreModel(t testing.TB, data []byte, maxOps int) {
	t.Helper()
	r := &byteReader{data: data}
	hdr := r.next()
	maxKeys, lenEvery := 1+int(hdr%6), hdr/6%2 == 1
	s, clk, n := newTestStore(modelWindow, maxKeys)
	m := newModel(modelWindow, maxKeys)
	claims := []claimPair{{op: -1}}
	recent := map[Key]string{} // decodeOp's
	var steps []modelStep

	for i := 0; i < maxOps && r.more(); i++ {
		op := decodeOp(r, recent)
		got, want := modelOutcome{Len: -1}, modelOutcome{Len: -1}
		step := modelStep{op: op, claim: claims[0]}
		switch op.kind {
		case opBegin:
			rc, res, ans := s.Begin(op.key, modelFPs[op.fp], op.id)
			mc, mres, mans := m.begin(op.key, modelFPs[op.fp], op.id)
			got.Result, got.Valid, got.Answer = res, rc.Valid(), ans
			want.Result, want.Valid, want.Answer = mres, mc.id != 0, mans
			if rc.Valid() && mc.id != 0 {
				step.claim = claimPair{op: i, real: rc, model: mc}
				claims = append(claims, step.claim)
				recent[op.key] = op.id
			}
		case opDone:
			step.claim = pickClaim(claims, op.claim)
			step.claim.real.Done(op.ans, op.spooled)
			m.done(step.claim.model, op.ans, op.spooled)
			if op.ans.MessageID != "" && step.claim.op >= 0 {
				recent[step.claim.model.key] = op.ans.MessageID
			}
		case opForget:
			step.claim = pickClaim(claims, op.claim)
			step.claim.real.Forget()
			m.forget(step.claim.model)
		case opConfirm:
			s.Confirm(op.key, op.id)
			m.confirm(op.key, op.id)
		case opDrop:
			s.Drop(op.key, op.id)
			m.drop(op.key, op.id)
		case opRestore:
			s.Restore(op.key, modelFPs[op.fp], op.ans, op.spooled, clk.now().Add(op.d))
			m.restore(op.key, modelFPs[op.fp], op.ans, op.spooled, m.now+op.d)
			recent[op.key] = op.ans.MessageID
		case opAdvance:
			clk.add(op.d)
			m.now += op.d
		}
		if op.kind == opLen || lenEvery {
			got.Len, want.Len = s.Len(), m.length()
		}
		n.mu.Lock()
		got.Evicted = n.evicted
		for res, k := range n.lookups {
			got.Lookups[res] += k
		}
		n.mu.Unlock()
		want.Evicted, want.Lookups = m.evicted, m.lookups
		step.now = m.now
		steps = append(steps, step)
		if got != want {
			var trace strings.Builder
			fmt.Fprintf(&trace, "NewStore(Window %v, MaxKeys %d), Len after each op: %v", modelWindow, maxKeys, lenEvery)
			for j, st := range steps {
				fmt.Fprintf(&trace, "\n  %3d (then t=%v) %v", j, st.now, st)
			}
			t.Fatalf("op %d: %v\n  store: %s\n  model: %s\nthe model's entries, oldest first:%s\nthe operations:\n%s\ninput (for f.Add): %q",
				i, step, got.format(op.kind == opBegin), want.format(op.kind == opBegin), m.dump(), trace.String(), data)
		}
	}
}

// dump describes the model's entries in their order, for a failure.
func (m *model) dump() string {
	var b strings.Builder
	for o := 1; o <= m.ticks; o++ {
		for _, e := range m.entries {
			if e.order == o {
				fmt.Fprintf(&b, "\n  %s %v fp=%x %+v spooled=%v doneAt=%v", keyString(e.key), e.state, e.fp[:2], e.ans, e.spooled, e.doneAt)
			}
		}
	}
	return b.String()
}

// TestStoreModel runs the driver on random sequences: the seed is logged,
// and a failure prints its input, which f.Add in FuzzStoreModel replays.
func TestStoreModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	runs := 2000
	if testing.Short() {
		runs = 200
	}
	data := make([]byte, 1+200*6)
	for range runs {
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		runStoreModel(t, data, 200)
	}
}

// FuzzStoreModel runs the driver on the fuzzer's inputs.
func FuzzStoreModel(f *testing.F) {
	// The header byte h: MaxKeys 1+h%6, Len after each op when h/6%2 == 1;
	// then per op (decodeOp): keys 0-3 app's, 4-7 other's; fingerprints
	// 0-2; Begin's ids 0 "", 1 m1, 2 m2, 3-6 the long ones; a claim byte
	// 0 is the latest claim, 1 the one before, 8 the zero Claim; an answer
	// byte 0 is 200, 13 a spooled 202, followed by an id byte (even: empty,
	// odd: id byte/2); Confirm's and Drop's id byte 0 is the key's recent
	// id; Advance 0 1ns, 1 1s, 2 W/2, 3 W-1ns, 4 W; Restore's doneAt 0 now,
	// 1 now-1s, 3 now-W+1ns, 5 now-2W.
	seeds := [][]byte{
		// The states of one key: new, conflict, mismatch, done, replayed,
		// forgotten and new again, a stale claim's late Done, spooled.
		{10, bBegin, 0, 0, 1, bBegin, 0, 0, 2, bBegin, 0, 1, 0, bDone, 0, 0, 0, bBegin, 0, 0, 2,
			bForget, 0, bBegin, 0, 0, 2, bDone, 1, 0, 0, bBegin, 0, 0, 0, bDone, 0, 13, 0, bBegin, 0, 0, 0},
		// The window's boundary: replayed 1 ns before it, new at it.
		{5, bBegin, 1, 0, 1, bDone, 0, 0, 0, bBegin, 4, 0, 2, bDone, 0, 0, 0, bAdvance, 3,
			bBegin, 1, 0, 0, bAdvance, 0, bBegin, 4, 0, 0, bLen},
		// Spooled, confirmed by key (its window from the confirm), dropped,
		// and the confirm of an entry expired but not removed yet.
		{5, bBegin, 2, 0, 1, bDone, 0, 13, 0, bAdvance, 2, bConfirm, 2, 0, bAdvance, 2, bBegin, 2, 0, 0,
			bBegin, 3, 1, 2, bDone, 0, 13, 0, bDrop, 3, 0, bBegin, 3, 1, 4, bDone, 0, 13, 0,
			bAdvance, 4, bConfirm, 3, 0, bBegin, 3, 1, 0},
		// Restore: expired skipped, spooled then confirmed, confirmed then
		// spooled (kept), and an entry expiring behind a younger one.
		{4, bRestore, 0, 0, 0, 3, 5, bRestore, 1, 1, 13, 5, 0, bRestore, 1, 1, 0, 5, 1,
			bRestore, 2, 2, 0, 7, 3, bRestore, 2, 2, 13, 7, 0, bBegin, 1, 1, 0, bBegin, 2, 2, 0,
			bAdvance, 0, bLen, bBegin, 2, 2, 0},
		// Eviction at MaxKeys 3: the done longest ago first, then, with
		// none done, the oldest open one.
		{2, bBegin, 0, 0, 1, bBegin, 1, 1, 2, bBegin, 2, 2, 3, bDone, 1, 0, 0, bAdvance, 1, bDone, 2, 0, 0,
			bBegin, 3, 0, 4, bBegin, 1, 1, 5, bBegin, 0, 0, 6, bBegin, 3, 0, 0, bBegin, 2, 2, 0, bLen},
		// MaxKeys 1: long keys and ids sharing their first 40 bytes.
		{6, bBegin, 2, 0, 5, bBegin, 3, 0, 6, bDone, 0, 0, 9, bConfirm, 3, 11, bBegin, 3, 0, 0,
			bRestore, 2, 0, 13, 13, 0, bConfirm, 2, 11, bConfirm, 2, 0, bBegin, 2, 0, 0, bBegin, 2, 1, 0},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		runStoreModel(t, data, 500)
	})
}
