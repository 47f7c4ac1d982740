package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/publisher-dev/publisher/publisher"
)

// legacyDecodeEntry is decodeEntry as it was with encoding/json (UseNumber,
// DisallowUnknownFields): the answers FuzzDecodeEntry holds the encoding/json/v2
// path to.
func legacyDecodeEntry(h *Handler, raw []byte) (*publisher.Message, entryIdem, *problem, error) {
	var idem entryIdem
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, idem, nil, errNotObject
	}
	var e entry
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return &publisher.Message{MessageID: idOf(raw)}, idem, badRequestf("malformed message object: %s", jsonErrorText(err)), nil
	}
	msg := &publisher.Message{Persistent: true, Mandatory: true}
	if len(e.MessageID) <= maxShortStr && utf8.ValidString(e.MessageID) {
		msg.MessageID = e.MessageID
	}
	if bad := h.fillEntry(msg, &e); bad != nil {
		return msg, idem, bad, nil
	}
	idem, bad := idemOfEntry(&e)
	if bad != nil {
		return msg, idem, bad, nil
	}
	if msg.MessageID == "" {
		msg.MessageID = publisher.NewMessageID()
	}
	msg.Timestamp = h.now()
	return msg, idem, nil, nil
}

// entryFields are the message object's names, as encoding/json matched
// them (case-insensitively).
var entryFields = []string{"exchange", "routing_key", "message_id", "body", "body_base64", "content_type", "content_encoding",
	"correlation_id", "reply_to", "type", "expiration_ms", "priority", "persistent", "mandatory", "headers", "idempotency_key"}

// stricterReason says why encoding/json/v2 may refuse raw where encoding/json
// accepted it, found without either decoder's struct code: a name given twice
// (exactly, at any depth; or a field's name twice in different cases),
// invalid UTF-8 (or an escaped lone surrogate), something after the object.
// "" when there is no such reason.
func stricterReason(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	dec := jsontext.NewDecoder(bytes.NewReader(raw)) // v2's defaults: names once, valid UTF-8
	if _, err := dec.ReadValue(); err != nil {
		if errors.Is(err, jsontext.ErrDuplicateName) {
			return "a name given twice"
		}
		return "invalid UTF-8: " + err.Error()
	}
	if int(dec.InputOffset()) != len(raw) {
		return "something after the object"
	}
	lax := jsontext.NewDecoder(bytes.NewReader(raw), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if tok, err := lax.ReadToken(); err != nil || tok.Kind() != '{' {
		return ""
	}
	seen := map[string]bool{}
	for lax.PeekKind() == '"' {
		name, _ := lax.ReadToken()
		for _, f := range entryFields {
			if strings.EqualFold(name.String(), f) {
				if seen[f] {
					return "a field's name twice, in different cases"
				}
				seen[f] = true
			}
		}
		if lax.SkipValue() != nil {
			return ""
		}
	}
	return ""
}

// FuzzDecodeEntry holds decodeEntry (encoding/json/v2) to legacyDecodeEntry
// (encoding/json): the same objects accepted, with the same message; the
// same refusals, with the same words (the field named, the offset); and,
// where v2 alone refuses, a reason among the decisions written in
// docs/performance.md, "Decoding message objects" (stricterReason).
func FuzzDecodeEntry(f *testing.F) {
	for _, s := range []string{
		`{"exchange":"amq.default","routing_key":"q","body":"hello"}`,
		`{"exchange": "events", "routing_key": "orders.created", "message_id": "m-1", "body_base64": "AAEC/w==", "content_type": "text/plain",
		  "content_encoding": "gzip", "correlation_id": "c", "reply_to": "r", "type": "t", "expiration_ms": 60000, "priority": 3,
		  "persistent": false, "mandatory": true, "headers": {"tenant": "acme", "n": 7, "f": 1.5, "b": true, "big": 12345678901234567890}}`,
		`{"exchange":"a","exchange":"b"}`,
		`{"exchange":"a","EXCHANGE":"b"}`,
		`{"EXCHANGE":"a","Routing_Key":"k"}`,
		`{"exchange":"a","routingkey":"k"}`,
		`{"exchange":"a","routing-key":"k"}`,
		`{"exchange":"a","routing_` + "\u212a" + `ey":"k"}`,
		`{"exchange":"a\xff"}`,
		`{"exchange":"\ud800"}`,
		`{"exchange":"a","headers":{"x":"\udc00\ud800"}}`,
		`{"exchange":"a","typo":1}`,
		`{"typo":1,"priority":"high"}`,
		`{"exchange":"a","priority":"3"}`,
		`{"exchange":"a","priority":"\u0033"}`,
		`{"exchange":"a","priority":" 3"}`,
		`{"exchange":"a","priority":"01"}`,
		`{"exchange":"a","priority":"high"}`,
		`{"exchange":"a","priority":1e400}`,
		`{"exchange":"a","priority":-0}`,
		`{"exchange":"a","priority":true}`,
		`{"exchange":"a","expiration_ms":2147483648}`,
		`{"exchange":"a"} trailing`,
		`{"exchange":"a"}{"exchange":"b"}`,
		`{"exchange":"a","persistent":"true"}`,
		`{"exchange":null,"routing_key":null,"headers":null,"priority":null}`,
		`{"exchange":"a","body":123}`,
		`{"exchange":"a","headers":[1]}`,
		`{"exchange":"a","headers":{"n":null,"o":{"p":1},"a":[1]}}`,
		`{"exchange":"a","headers":{"k":1,"k":2}}`,
		`{"exchange":"a","headers":{"":"x"}}`,
		`{"exchange":"a","body":"x","body_base64":"eA=="}`,
		`{"exchange":"a", "priority": 3,}`,
		`{"exchange":"a" "priority": 3}`,
		`{"exchange":"secret"}`,
		`{"exchange":"a","idempotency_key":"k-1"}`,
		`{"exchange":"a","idempotency_key":""}`,
		`{"exchange":"a","Idempotency_Key":"k","idempotency_key":"k"}`,
		`{"exchange":"a","idempotency_key":null}`,
		`{"exchange":"a","idempotency_key":1}`,
		" \t{\"exchange\":\"a\"}\n ",
		`[]`, `"x"`, `null`, `{`, `{}`,
	} {
		f.Add([]byte(s))
	}
	const maxBody = 64
	h := testHandler(&fakePublisher{}, nil, func(c *Config) {
		c.MaxBodyBytes = maxBody
		c.AllowedExchanges = []string{"amq.default", "a", "b", "events"}
	}).(*Handler)
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, gotIdem, gotBad, gotErr := h.decodeEntry(raw)
		want, wantIdem, wantBad, wantErr := legacyDecodeEntry(h, raw)
		if !errors.Is(gotErr, wantErr) {
			t.Fatalf("%q: error %v, encoding/json's %v", raw, gotErr, wantErr)
		}
		if gotErr != nil {
			return
		}
		const malformed = "malformed message object: "
		if gotBad != nil && strings.HasPrefix(gotBad.text, malformed) && (wantBad == nil || !strings.HasPrefix(wantBad.text, malformed)) {
			// v2 refused what encoding/json decoded: only for a decision
			if reason := stricterReason(raw); reason == "" {
				t.Fatalf("%q: v2 refused (%s) what encoding/json accepted (%v), for none of the decisions", raw, gotBad.text, wantBad)
			}
			if gotBad.code != http.StatusBadRequest || got.MessageID != idOf(bytes.TrimSpace(raw)) {
				t.Fatalf("%q: refused with %d, id %q", raw, gotBad.code, got.MessageID)
			}
			return
		}
		if (gotBad == nil) != (wantBad == nil) {
			t.Fatalf("%q: refusal %v, encoding/json's %v", raw, gotBad, wantBad)
		}
		if gotBad != nil {
			if gotBad.code == wantBad.code && sameHeaderRefusal(gotBad.text, wantBad.text) {
				return
			}
			if gotBad.code != wantBad.code || gotBad.text != wantBad.text || got.MessageID != want.MessageID {
				t.Fatalf("%q: refused %d %q (id %q), encoding/json: %d %q (id %q)", raw, gotBad.code, gotBad.text, got.MessageID,
					wantBad.code, wantBad.text, want.MessageID)
			}
			return
		}
		if reason := stricterReason(raw); reason != "" {
			t.Fatalf("%q: accepted although %s", raw, reason)
		}
		g, w := *got, *want
		if g.MessageID == "" || w.MessageID == "" {
			t.Fatalf("%q: message ids %q and %q", raw, g.MessageID, w.MessageID)
		}
		if len(g.MessageID) == 26 && len(w.MessageID) == 26 && g.MessageID != w.MessageID { // both generated
			g.MessageID, w.MessageID = "", ""
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%q: published as\n%+v\nencoding/json:\n%+v", raw, g, w)
		}
		if !reflect.DeepEqual(gotIdem, wantIdem) {
			t.Fatalf("%q: idempotency key %+v, encoding/json's %+v", raw, gotIdem, wantIdem)
		}
	})
}

// sameHeaderRefusal reports whether a and b both refuse one of the
// headers: fillEntry checks them in a map's order, so with two bad headers
// (a bad name, a bad value) either may be the one named, whatever decoded
// them.
func sameHeaderRefusal(a, b string) bool {
	return strings.HasPrefix(a, "headers") && strings.HasPrefix(b, "headers")
}

const wantMessages = `want {"messages": [message objects]}`

// legacySplitBatch is the batch envelope as json.Unmarshal read it, or its
// refusal's words: FuzzSplitBatch holds splitBatch to it.
func legacySplitBatch(body []byte) (raws []json.RawMessage, text string) {
	var env struct {
		Messages *[]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, jsonErrorText(err)
	}
	if env.Messages == nil {
		return nil, wantMessages
	}
	return *env.Messages, ""
}

// FuzzSplitBatch holds splitBatch (one pass of a jsontext.Decoder) to
// json.Unmarshal's reading of {"messages": [...]}: the same message objects,
// byte for byte, or the same refusal in the same words; and "messages"
// given twice, which encoding/json took the last of, refused.
func FuzzSplitBatch(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"exchange":"amq.default"},{"exchange":"a","body":"x"}]}`,
		` {"messages" : [ {"a":1} , 42, "x", null, [1], {"b":{"c":[]}} ] } `,
		`{"messages":[]}`, `{"messages":null}`, `{}`, `null`, `[]`, `"messages"`, `{"messages":5}`, `{"messages":{}}`,
		`{"Messages":[{}]}`, `{"MESSAGES":[{}],"other":{"x":[1,2]}}`, `{"me` + "\u017f" + `sages":[{}]}`, `{"mess\u0061ges":[{}]}`,
		`{"messages":[{}],"messages":[{},{}]}`, `{"messages":null,"Messages":[{}]}`,
		`{"messages":[{"a":1,"a":2}]}`, "{\"messages\":[{\"a\":\"\xff\"}],\"x\":\"\xfe\"}",
		`{"messages":[{}]} x`, `{"messages":[{}]}{}`, `{"messages":[{},]}`, `{"messages":[`, `{"messages":[{}]`,
		`{"messages":[{"a":"\ud800"}]}`, `{"x":1,"x":2,"messages":[{}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		raws, err := splitBatch(body)
		wantRaws, wantText := legacySplitBatch(body)
		if errors.Is(err, errDuplicateMessages) {
			n := 0
			lax := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
			if tok, err := lax.ReadToken(); err == nil && tok.Kind() == '{' {
				for lax.PeekKind() == '"' {
					name, _ := lax.ReadToken()
					if strings.EqualFold(name.String(), "messages") {
						n++
					}
					if lax.SkipValue() != nil {
						break
					}
				}
			}
			if n < 2 {
				t.Fatalf("%q: refused as %v with %d \"messages\"", body, err, n)
			}
			return
		}
		var text string
		switch {
		case err != nil:
			text = batchErrorText(body, err)
		case raws == nil:
			text = wantMessages
		}
		if text != wantText {
			t.Fatalf("%q: refused %q, encoding/json: %q", body, text, wantText)
		}
		if len(raws) != len(wantRaws) {
			t.Fatalf("%q: %d objects, encoding/json %d", body, len(raws), len(wantRaws))
		}
		for i := range raws {
			if !bytes.Equal(raws[i], wantRaws[i]) {
				t.Fatalf("%q: messages[%d] is %q, encoding/json's %q", body, i, raws[i], wantRaws[i])
			}
		}
	})
}
