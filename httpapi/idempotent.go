package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"

	"github.com/publisher-dev/publisher/apps"
	"github.com/publisher-dev/publisher/idempotency"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/relay"
)

// Idempotent publishing (docs/http-api.md, "Idempotent publishing"): a
// request with an Idempotency-Key (a batch or stream message with an
// idempotency_key) is looked up in the handler's idempotency.Store once it
// is taken (after every refusal of the request itself: 401, 403, 413, 429,
// 503 are never remembered), and
//   - new: published, and its outcome recorded (keyOutcome);
//   - seen, same fingerprint, outcome known: answered again from memory
//     (Idempotent-Replayed: true), nothing published;
//   - seen, same fingerprint, outcome not known yet: 409 with Retry-After;
//   - seen with another fingerprint: 422 naming the key.

// Header names of idempotent publishing.
const (
	idempotencyKeyHeader = "Idempotency-Key"
	replayedHeader       = "Idempotent-Replayed"
)

var replayedTrue = []string{"true"}

// entryIdem is what a batch or stream message object says about
// idempotency: its idempotency_key ("" for none) and whether it named its
// own message_id (a generated one is no part of the fingerprint).
type entryIdem struct {
	key     string
	idGiven bool
}

// idemOfEntry reads and checks e's idempotency_key (400 when it is not 1 to
// 255 bytes of UTF-8 without control characters).
func idemOfEntry(e *entry) (entryIdem, *problem) {
	idem := entryIdem{idGiven: e.MessageID != ""}
	if e.IdempotencyKey == nil {
		return idem, nil
	}
	if err := idempotency.CheckKey(*e.IdempotencyKey); err != nil {
		return idem, badRequest("idempotency_key must be 1 to 255 bytes of UTF-8 without control characters")
	}
	idem.key = *e.IdempotencyKey
	return idem, nil
}

// traceHeaders are the AMQP headers of the trace context: a client's retry
// usually carries a new one, so they are no part of a fingerprint.
func traceHeader(name string) bool {
	return name == "traceparent" || name == "tracestate" || name == "baggage"
}

// fingerprintMessage writes into x what msg will be, as the client asked
// for it: destination, body, properties and headers, but not the trace
// context (traceHeader), the timestamp, or a message id the client did not
// give (idGiven false: generated).
func fingerprintMessage(x *idempotency.Hasher, msg *publisher.Message, idGiven bool) {
	x.String(msg.Exchange)
	x.String(msg.RoutingKey)
	x.Bytes(msg.Body)
	x.Bool(idGiven)
	if idGiven {
		x.String(msg.MessageID)
	}
	for _, s := range [...]string{msg.ContentType, msg.ContentEncoding, msg.CorrelationID, msg.ReplyTo, msg.Type, msg.Expiration} {
		x.String(s)
	}
	x.Uint(uint64(msg.Priority))
	x.Bool(msg.Persistent)
	x.Bool(msg.Mandatory)
	var names []string
	for k := range msg.Headers {
		if !traceHeader(k) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	x.Uint(uint64(len(names)))
	for _, k := range names {
		x.String(k)
		switch v := msg.Headers[k].(type) {
		case string:
			x.String(v)
		case int64:
			x.Int(v)
		case float64:
			x.Float(v)
		case bool:
			x.Bool(v)
		default: // not made by this package's decoders; hashed by its text
			x.String("?")
		}
	}
}

// singleFingerprint is a single publish's fingerprint: its message (before
// an id is generated and before a CloudEvent wrapping adds its id and
// time) and its CloudEvents request headers (ce-*, X-CloudEvents, and
// whether it asked to be wrapped).
func singleFingerprint(r *http.Request, msg *publisher.Message, idGiven bool, ce *ceRequest) idempotency.Fingerprint {
	x := idempotency.NewHasher()
	fingerprintMessage(x, msg, idGiven)
	x.Bool(ce.wrap)
	var names []string
	for k := range r.Header {
		if (len(k) > 3 && k[:3] == "Ce-") || k == "X-Cloudevents" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		x.String(k)
		for _, v := range r.Header[k] {
			x.String(v)
		}
	}
	return x.Sum()
}

// entryFingerprint is a batch or stream message's fingerprint.
func entryFingerprint(msg *publisher.Message, idGiven bool) idempotency.Fingerprint {
	x := idempotency.NewHasher()
	fingerprintMessage(x, msg, idGiven)
	return x.Sum()
}

// keyOutcome records what became of a claimed message: from its Sender's
// done (final: the real outcome, which may come after the request was
// answered), or from the answer of giveUp (final false).
//
// The rule: a key is remembered while its message may have reached a
// queue, and forgotten when it certainly did not, so that a retry is
// processed as new (it cannot make a duplicate, and a client that fixed
// the cause, say created the exchange, is not answered the old error for
// the window):
//   - confirmed: 200, replayed; spooled: 202, replayed, 200 once confirmed;
//   - sent, not confirmed yet (504 "may still reach the broker", giveUp's
//     answer): the entry stays open (409) until the real outcome comes; a
//     final one of that kind is kept as it is (the message may still arrive);
//   - in flight through too many connection failures (502): kept, it may
//     have arrived;
//   - everything else (not taken, not published, refused by the broker or
//     as invalid): forgotten.
func keyOutcome(c idempotency.Claim, d relay.Delivery, err error, final bool) {
	if !c.Valid() {
		return
	}
	if err == nil {
		if d == relay.Spooled {
			c.Done(idempotency.Answer{Code: http.StatusAccepted}, true)
			return
		}
		c.Done(idempotency.Answer{Code: http.StatusOK}, false)
		return
	}
	switch publisher.Classify(err) {
	case publisher.TimedOut, publisher.Interrupted:
		if final {
			p := answerFor(err)
			c.Done(idempotency.Answer{Code: p.code, Text: p.text}, false)
		}
	case publisher.TooManyAttempts:
		p := answerFor(err)
		c.Done(idempotency.Answer{Code: p.code, Text: p.text}, false)
	default:
		c.Forget()
	}
}

// lookupResult is a keyed message's answer when Begin found its key: a
// replay, a conflict or a mismatch (own is the id the message itself
// named, for a mismatch).
func lookupResult(res idempotency.Result, ans idempotency.Answer, key, own string) result {
	switch res {
	case idempotency.Replayed:
		return result{id: ans.MessageID, code: ans.Code, text: ans.Text, replayed: true}
	case idempotency.Conflict:
		return result{id: ans.MessageID, code: http.StatusConflict, text: conflictText}
	}
	return result{id: own, code: http.StatusUnprocessableEntity, text: mismatchText(key)}
}

const conflictText = "a request with this idempotency key is still waiting for the broker's answer; retry later with the same key"

func mismatchText(key string) string {
	return "idempotency key " + strconv.Quote(key) + " was used for a different request within the window; use a new key for a new message"
}

// writeLookup answers a single publish whose key Begin found, and returns
// the status.
func (h *Handler) writeLookup(w http.ResponseWriter, r *http.Request, res idempotency.Result, ans idempotency.Answer, key string) int {
	out := lookupResult(res, ans, key, clientID(r))
	switch {
	case res == idempotency.Replayed:
		w.Header()[replayedHeader] = replayedTrue[:1:1]
		switch out.code {
		case http.StatusOK:
			writeConfirmed(w, out.id)
		case http.StatusAccepted:
			writeSpooled(w, out.id, false)
		default:
			writeJSONError(w, out.code, out.text, out.id)
		}
		h.onResponse(out.code)
		return out.code
	case res == idempotency.Conflict:
		return h.fail(w, &problem{code: out.code, text: out.text, retry: true}, out.id)
	}
	return h.fail(w, refuse(out.code, out.text), out.id)
}

// tapSender is a Sender whose messages' outcomes are also passed to tap,
// final ones included that come after the caller gave up (done is called
// once with the real outcome): the late confirm of a 504.
type tapSender struct {
	relay.Sender
	tap func(i int, d relay.Delivery, err error)
}

func (t tapSender) Send(ctx context.Context, msgs []*publisher.Message, opts relay.SendOptions, done func(int, relay.Delivery, error)) func(int, error) (relay.Delivery, error) {
	return t.Sender.Send(ctx, msgs, opts, func(i int, d relay.Delivery, err error) {
		t.tap(i, d, err)
		done(i, d, err)
	})
}

// refuseRequestKey refuses an Idempotency-Key header on /v1/batch and
// /v1/stream: their keys are per message (idempotency_key), and a key for
// the whole request would promise what no message's key keeps.
func refuseRequestKey(r *http.Request) *problem {
	if len(r.Header[idempotencyKeyHeader]) == 0 {
		return nil
	}
	return badRequest("Idempotency-Key is per message on /v1/batch and /v1/stream: give each message an idempotency_key")
}

// keyedBatch is the idempotency keys of one batch's messages: the claims
// of those to publish, by their position in the Send, and the messages
// that repeat the key of an earlier message of the same batch.
type keyedBatch struct {
	h      *Handler
	app    *apps.App
	claims []idempotency.Claim // by position in the Send; shorter when the last ones have no key
	refs   []relay.KeyRef      // likewise, for SendOptions.Keys; nil while no message has a key
	first  map[string]firstUse // key → the entry that used it first in this batch
	repeat map[int]int         // entry → the earlier entry with its key and fingerprint
}

// firstUse is the entry of a batch that used a key first, and its
// fingerprint.
type firstUse struct {
	entry int
	fp    idempotency.Fingerprint
}

func newKeyedBatch(h *Handler, app *apps.App) *keyedBatch { return &keyedBatch{h: h, app: app} }

// begin looks up the key of entry i (msg, with idem.key set), which would
// be message k of the Send. done reports that it is not to be published:
// res is its result (a replay, 409 or 422), or it repeats an earlier entry
// of the batch (its result is that entry's: repeats). A repeat with
// another fingerprint is a 422 like any reuse of a key.
func (kb *keyedBatch) begin(i int, msg *publisher.Message, idem entryIdem, k int) (res result, done bool) {
	fp := entryFingerprint(msg, idem.idGiven)
	own := ""
	if idem.idGiven {
		own = msg.MessageID
	}
	if kb.first == nil {
		kb.first, kb.repeat = map[string]firstUse{}, map[int]int{}
	}
	if f, ok := kb.first[idem.key]; ok {
		if f.fp != fp {
			return lookupResult(idempotency.Mismatch, idempotency.Answer{}, idem.key, own), true
		}
		kb.repeat[i] = f.entry
		return result{}, true
	}
	kb.first[idem.key] = firstUse{entry: i, fp: fp}
	key := idempotency.Key{Scope: kb.app.Name(), Name: idem.key}
	c, found, ans := kb.h.keys.Begin(key, fp, msg.MessageID)
	if found != idempotency.New {
		return lookupResult(found, ans, idem.key, own), true
	}
	for len(kb.claims) < k {
		kb.claims = append(kb.claims, idempotency.Claim{})
		kb.refs = append(kb.refs, relay.KeyRef{})
	}
	kb.claims = append(kb.claims, c)
	kb.refs = append(kb.refs, relay.KeyRef{Key: key, Fingerprint: fp})
	return result{}, false
}

func (kb *keyedBatch) claim(k int) idempotency.Claim {
	if k < len(kb.claims) {
		return kb.claims[k]
	}
	return idempotency.Claim{}
}

// done wraps a Send's done so that each outcome also reaches its key.
func (kb *keyedBatch) done(inner func(int, relay.Delivery, error)) func(int, relay.Delivery, error) {
	if kb.claims == nil {
		return inner
	}
	return func(k int, d relay.Delivery, err error) {
		keyOutcome(kb.claim(k), d, err, true)
		inner(k, d, err)
	}
}

// giveUp wraps a Send's giveUp so that its answer also reaches the key.
func (kb *keyedBatch) giveUp(inner func(int, error) (relay.Delivery, error)) func(int, error) (relay.Delivery, error) {
	if kb.claims == nil {
		return inner
	}
	return func(k int, cause error) (relay.Delivery, error) {
		d, err := inner(k, cause)
		keyOutcome(kb.claim(k), d, err, false)
		return d, err
	}
}

// repeats gives each entry that repeated an earlier one's key that entry's
// result, as a replay (a 409 or 422 stays what it is).
func (kb *keyedBatch) repeats(results []result) {
	for i, j := range kb.repeat {
		r := results[j]
		if r.code != http.StatusConflict && r.code != http.StatusUnprocessableEntity {
			r.replayed = true
		}
		results[i] = r
	}
}

// allReplayed reports whether every result is a replay: the whole answer
// is then one given before, and says so with Idempotent-Replayed.
func (kb *keyedBatch) allReplayed(results []result) bool {
	for _, r := range results {
		if !r.replayed {
			return false
		}
	}
	return true
}

// beginKey looks up the key of stream line index (msg, with idem.key
// set), in the scope of the app the line was checked against. done reports
// that it is not to be published: res is its result (a replay, 409 or
// 422). A key repeated by a later line of the same stream is looked up
// like any retry: 409 while the first line waits, its answer after.
func (st *stream) beginKey(index int, msg *publisher.Message, idem entryIdem) (res result, done bool) {
	fp := entryFingerprint(msg, idem.idGiven)
	key := idempotency.Key{Scope: st.app.Name(), Name: idem.key}
	c, found, ans := st.h.keys.Begin(key, fp, msg.MessageID)
	if found != idempotency.New {
		own := ""
		if idem.idGiven {
			own = msg.MessageID
		}
		return lookupResult(found, ans, idem.key, own), true
	}
	if st.keyed == nil {
		st.keyed = map[int]keyedLine{}
	}
	st.keyed[index] = keyedLine{claim: c, ref: relay.KeyRef{Key: key, Fingerprint: fp}}
	return result{}, false
}
