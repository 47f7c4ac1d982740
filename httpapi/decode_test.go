package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

// The message object's decoding is stricter than encoding/json's in three
// ways only, each a decision written in docs/performance.md ("Decoding
// message objects"): a name given twice (also in different cases), invalid UTF-8, and
// anything after the object on a stream's line, each that entry's 400 (and
// "messages" given twice, the whole batch's); everything else is decoded as
// before (FuzzDecodeEntry, FuzzSplitBatch).
func TestDecodeStricterThanEncodingJSON(t *testing.T) {
	checkLeaks(t)
	pub := &fakePublisher{}
	h := testHandler(pub, nil, nil)
	body := "{\"messages\": [" +
		`{"exchange": "amq.default", "routing_key": "q", "message_id": "twice", "routing_key": "r"},` +
		`{"exchange": "amq.default", "Routing_Key": "q", "message_id": "twice-in-cases", "routing_key": "r"},` +
		"{\"exchange\": \"amq.default\", \"message_id\": \"utf8\", \"body\": \"\xff\"}," +
		`{"exchange": "amq.default", "message_id": "surrogate", "body": "\ud800"},` +
		`{"exchange": "amq.default", "message_id": "twice-in-headers", "headers": {"a": 1, "a": 2}},` +
		`{"EXCHANGE": "amq.default", "Routing_Key": "q", "message_id": "cases", "priority": "3", "headers": {"n": 7}}` +
		"]}"
	code, a, raw := postBatch(t, h, body, nil)
	if code != http.StatusMultiStatus || len(a.Results) != 6 {
		t.Fatalf("status %d, want 207 with 6 results: %s", code, raw)
	}
	for i, want := range []struct{ id, text string }{
		{"twice", `duplicate object member name "routing_key"`},
		{"twice-in-cases", `duplicate object member name "routing_key"`},
		{"utf8", `invalid UTF-8 within "/body"`},
		{"surrogate", `invalid surrogate pair`},
		{"twice-in-headers", `duplicate object member name "a"`},
	} {
		r := a.Results[i]
		if r.Status != http.StatusBadRequest || r.MessageID != want.id || !strings.Contains(r.Error, "malformed message object: ") || !strings.Contains(r.Error, want.text) {
			t.Errorf("result %d = %+v, want a 400 for %s naming %q", i, r, want.id, want.text)
		}
	}
	if r := a.Results[5]; r.Status != http.StatusOK {
		t.Errorf("names in other cases, a priority in a string: %+v, want 200", r)
	}
	got := pub.received()
	if len(got) != 1 || got[0].RoutingKey != "q" || got[0].Priority != 3 || got[0].Headers["n"] != int64(7) {
		t.Fatalf("published %+v, want only the last one, routing key q, priority 3, header n 7", got)
	}

	code, a, raw = postBatch(t, h, `{"messages": [{"exchange": "amq.default"}], "Messages": [{"exchange": "amq.default"}]}`, nil)
	if code != http.StatusBadRequest || a.Error != `malformed batch: "messages" given twice` {
		t.Errorf("messages given twice: %d %s", code, raw)
	}

	hh := h.(*Handler)
	for _, line := range []string{`{"exchange": "amq.default"} {"exchange": "amq.default"}`, `{"exchange": "amq.default"},`} {
		_, _, bad, err := hh.decodeEntry([]byte(line))
		if err != nil || bad == nil || bad.code != http.StatusBadRequest || !strings.Contains(bad.text, "after top-level value") {
			t.Errorf("line %q: %v %v, want a 400 for what follows the object", line, bad, err)
		}
	}
}
