package httpapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// benchEntries returns n distinct message objects of a kind: "bench", what
// pubbench's modes (f) and (g) send (the default exchange, a routing key, a
// 256-byte body); "full", every field and four headers. Distinct bodies, so
// that no decoder's string cache sees the same one twice in a row.
func benchEntries(kind string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		body := strings.Repeat(fmt.Sprintf("%08d-abcdefghijklmnopqrstuvwxyz", i), 8)[:256]
		switch kind {
		case "bench":
			out[i] = []byte(`{"exchange":"amq.default","routing_key":"pubbench","body":"` + body + `"}`)
		case "full":
			out[i] = fmt.Appendf(nil, `{"exchange": "amq.default", "routing_key": "orders.created", "message_id": "order-%d-created", "body": %q,
 "content_type": "text/plain", "correlation_id": "c-%d", "priority": 3, "expiration_ms": 60000, "persistent": true, "mandatory": false,
 "headers": {"tenant": "acme", "n": %d, "f": 1.5, "b": true}}`, i, body, i, i)
		}
	}
	return out
}

// legacyBatchEntries is batchEntries as it was (json.Unmarshal of the
// envelope into json.RawMessage, then encoding/json per object).
func legacyBatchEntries(h *Handler, body []byte) error {
	raws, text := legacySplitBatch(body)
	if text != "" {
		return fmt.Errorf("%s", text)
	}
	for _, raw := range raws {
		if _, _, bad, err := legacyDecodeEntry(h, raw); err != nil || bad != nil {
			return fmt.Errorf("%v %v", bad, err)
		}
	}
	return nil
}

const benchDistinct = 1000

// BenchmarkDecodeEntry decodes and validates one message object (a stream's
// line): encoding/json as before, and the encoding/json/v2 path. ns/op and
// allocs/op are per message object.
func BenchmarkDecodeEntry(b *testing.B) {
	h := testHandler(&fakePublisher{}, nil, func(c *Config) { c.MaxBodyBytes = 1 << 20 }).(*Handler)
	for _, kind := range []string{"bench", "full"} {
		raws := benchEntries(kind, benchDistinct)
		for _, c := range []struct {
			name   string
			decode func([]byte) error
		}{
			{"encoding-json", func(raw []byte) error { _, _, bad, err := legacyDecodeEntry(h, raw); return check(bad, err) }},
			{"json-v2", func(raw []byte) error { _, _, bad, err := h.decodeEntry(raw); return check(bad, err) }},
		} {
			b.Run(kind+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if err := c.decode(raws[i%benchDistinct]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

func check(bad *problem, err error) error {
	if bad != nil {
		return bad
	}
	return err
}

// BenchmarkBatchEntries decodes and validates a batch of 100 message
// objects (the envelope and each object): ns/op is per batch, so per message
// object it is ns/op / 100.
func BenchmarkBatchEntries(b *testing.B) {
	h := testHandler(&fakePublisher{}, nil, func(c *Config) { c.MaxBodyBytes = 1 << 20 }).(*Handler)
	raws := benchEntries("bench", benchDistinct)
	bodies := make([][]byte, benchDistinct/100)
	for k := range bodies {
		bodies[k] = append(append([]byte(`{"messages":[`), joinJSON(raws[k*100:(k+1)*100])...), "]}"...)
	}
	for _, c := range []struct {
		name   string
		decode func([]byte) error
	}{
		{"encoding-json", func(body []byte) error { return legacyBatchEntries(h, body) }},
		{"json-v2", func(body []byte) error {
			_, _, bad, err := h.batchEntries(nil, body, false)
			for _, p := range bad {
				if p != nil {
					return p
				}
			}
			return err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := c.decode(bodies[i%len(bodies)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func joinJSON(raws [][]byte) []byte {
	var out []byte
	for i, r := range raws {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, r...)
	}
	return out
}

// BenchmarkAppendResult writes one result line of a stream: appendResult
// (hand-written) against encoding/json and encoding/json/v2 marshaling the
// same object.
func BenchmarkAppendResult(b *testing.B) {
	type line struct {
		Index     int    `json:"index"`
		MessageID string `json:"message_id"`
		Status    int    `json:"status"`
		Outcome   string `json:"outcome,omitempty"`
		Error     string `json:"error,omitempty"`
	}
	res := result{id: "01JB0Q5G6V8X2K3M4N5P6R7S8T", code: 200}
	b.Run("appendResult", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 4096)
		i := 0
		for b.Loop() {
			buf = appendResult(buf[:0], i, res)
			i++
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := json.Marshal(line{Index: i, MessageID: res.id, Status: res.code, Outcome: res.outcome()}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("json-v2", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 4096)
		i := 0
		for b.Loop() {
			var err error
			buf, err = jsonv2.Marshal(line{Index: i, MessageID: res.id, Status: res.code, Outcome: res.outcome()}, jsontext.EscapeForHTML(true))
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
		_ = buf
	})
}
