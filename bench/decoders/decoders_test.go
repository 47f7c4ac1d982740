package decoders

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
	gojson "github.com/goccy/go-json"
)

// entry is httpapi's message object.
type entry struct {
	Exchange        *string        `json:"exchange"`
	RoutingKey      string         `json:"routing_key"`
	MessageID       string         `json:"message_id"`
	Body            *string        `json:"body"`
	BodyBase64      *string        `json:"body_base64"`
	ContentType     string         `json:"content_type"`
	ContentEncoding string         `json:"content_encoding"`
	CorrelationID   string         `json:"correlation_id"`
	ReplyTo         string         `json:"reply_to"`
	Type            string         `json:"type"`
	ExpirationMS    *json.Number   `json:"expiration_ms"`
	Priority        *json.Number   `json:"priority"`
	Persistent      *bool          `json:"persistent"`
	Mandatory       *bool          `json:"mandatory"`
	Headers         map[string]any `json:"headers"`
	IdempotencyKey  *string        `json:"idempotency_key"`
}

// decodeV1 is encoding/json as the service used it.
func decodeV1(raw []byte) (*entry, error) {
	var e entry
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

// envelopeV1 is the batch's envelope as the service read it.
func envelopeV1(body []byte) ([][]byte, error) {
	var env struct {
		Messages *[]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, err
	}
	if env.Messages == nil {
		return nil, errors.New("no messages")
	}
	out := make([][]byte, len(*env.Messages))
	for i, r := range *env.Messages {
		out[i] = r
	}
	return out, nil
}

// v2Options are httpapi's entryOptions.
var v2Options = jsonv2.JoinOptions(
	jsonv2.RejectUnknownMembers(true),
	jsonv2.MatchCaseInsensitiveNames(true),
	jsonv1.MatchCaseSensitiveDelimiter(true),
	jsonv2.WithUnmarshalers(jsonv2.JoinUnmarshalers(
		jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, v *any) error {
			if dec.PeekKind() != '0' {
				return errors.ErrUnsupported
			}
			raw, err := dec.ReadValue()
			*v = json.Number(raw)
			return err
		}),
		jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, n *json.Number) error {
			raw, err := dec.ReadValue()
			if err != nil {
				return err
			}
			if raw.Kind() != '0' {
				return errors.New("not a number") // (httpapi also takes a string holding one)
			}
			*n = json.Number(raw)
			return nil
		}),
	)),
)

func decodeV2(raw []byte) (*entry, error) {
	var e entry
	if err := jsonv2.Unmarshal(raw, &e, v2Options); err != nil {
		return nil, err
	}
	return &e, nil
}

// envelopeV2 reads the batch's envelope once with a jsontext.Decoder, as
// httpapi's splitBatch does (without its checks).
func envelopeV2(body []byte) ([][]byte, error) {
	dec := jsontext.NewDecoder(bytes.NewBuffer(body), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if _, err := dec.ReadToken(); err != nil {
		return nil, err
	}
	var out [][]byte
	for dec.PeekKind() != '}' {
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		out = make([][]byte, 0, 64)
		for dec.PeekKind() != ']' {
			v, err := dec.ReadValue()
			if err != nil {
				return nil, err
			}
			end := int(dec.InputOffset())
			out = append(out, body[end-len(v):end:end])
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
	}
	_, err := dec.ReadToken()
	return out, err
}

// gentry is entry with goccy's Number type.
type gentry struct {
	Exchange        *string        `json:"exchange"`
	RoutingKey      string         `json:"routing_key"`
	MessageID       string         `json:"message_id"`
	Body            *string        `json:"body"`
	BodyBase64      *string        `json:"body_base64"`
	ContentType     string         `json:"content_type"`
	ContentEncoding string         `json:"content_encoding"`
	CorrelationID   string         `json:"correlation_id"`
	ReplyTo         string         `json:"reply_to"`
	Type            string         `json:"type"`
	ExpirationMS    *gojson.Number `json:"expiration_ms"`
	Priority        *gojson.Number `json:"priority"`
	Persistent      *bool          `json:"persistent"`
	Mandatory       *bool          `json:"mandatory"`
	Headers         map[string]any `json:"headers"`
	IdempotencyKey  *string        `json:"idempotency_key"`
}

func decodeGoccy(raw []byte) (*gentry, error) {
	var e gentry
	dec := gojson.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

func envelopeGoccy(body []byte) ([][]byte, error) {
	var env struct {
		Messages *[]gojson.RawMessage `json:"messages"`
	}
	if err := gojson.Unmarshal(body, &env); err != nil {
		return nil, err
	}
	if env.Messages == nil {
		return nil, errors.New("no messages")
	}
	out := make([][]byte, len(*env.Messages))
	for i, r := range *env.Messages {
		out[i] = r
	}
	return out, nil
}

// benchEntries returns n distinct message objects of a kind (as httpapi's
// benchmarks): "bench", what pubbench sends; "full", every field and four
// headers. Distinct bodies, so that no string cache sees one twice in a row.
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

const distinct = 1000

// TestSameValues checks that every candidate decodes the benchmark's
// objects into the same values as encoding/json.
func TestSameValues(t *testing.T) {
	for _, kind := range []string{"bench", "full"} {
		for _, raw := range benchEntries(kind, 3) {
			want, err := decodeV1(raw)
			if err != nil {
				t.Fatal(err)
			}
			for name, decode := range map[string]func([]byte) (*entry, error){"v2": decodeV2, "hand": decodeHand, "goccy": func(raw []byte) (*entry, error) {
				g, err := decodeGoccy(raw)
				if err != nil {
					return nil, err
				}
				e := entry{Exchange: g.Exchange, RoutingKey: g.RoutingKey, MessageID: g.MessageID, Body: g.Body, BodyBase64: g.BodyBase64,
					ContentType: g.ContentType, ContentEncoding: g.ContentEncoding, CorrelationID: g.CorrelationID, ReplyTo: g.ReplyTo, Type: g.Type,
					Persistent: g.Persistent, Mandatory: g.Mandatory, IdempotencyKey: g.IdempotencyKey}
				if g.Priority != nil {
					n := json.Number(*g.Priority)
					e.Priority = &n
				}
				if g.ExpirationMS != nil {
					n := json.Number(*g.ExpirationMS)
					e.ExpirationMS = &n
				}
				if g.Headers != nil {
					e.Headers = map[string]any{}
					for k, v := range g.Headers {
						if n, ok := v.(gojson.Number); ok {
							v = json.Number(n)
						}
						e.Headers[k] = v
					}
				}
				return &e, nil
			}} {
				got, err := decode(raw)
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Errorf("%s, %s: %+v %v, want %+v", kind, name, got, err, want)
				}
			}
		}
	}
}

// BenchmarkEntry decodes one message object (a stream's line); ns/op and
// allocs/op are per object.
func BenchmarkEntry(b *testing.B) {
	for _, kind := range []string{"bench", "full"} {
		raws := benchEntries(kind, distinct)
		for _, c := range []struct {
			name   string
			decode func([]byte) error
		}{
			{"encoding-json", func(r []byte) error { _, err := decodeV1(r); return err }},
			{"json-v2", func(r []byte) error { _, err := decodeV2(r); return err }},
			{"goccy", func(r []byte) error { _, err := decodeGoccy(r); return err }},
			{"hand", func(r []byte) error { _, err := decodeHand(r); return err }},
		} {
			b.Run(kind+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if err := c.decode(raws[i%distinct]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkBatch100 decodes a batch of 100 of pubbench's objects, the
// envelope and each object: ns/op / 100 is per object.
func BenchmarkBatch100(b *testing.B) {
	raws := benchEntries("bench", distinct)
	bodies := make([][]byte, distinct/100)
	for k := range bodies {
		bodies[k] = append(append([]byte(`{"messages":[`), bytes.Join(raws[k*100:(k+1)*100], []byte(","))...), "]}"...)
	}
	for _, c := range []struct {
		name     string
		envelope func([]byte) ([][]byte, error)
		decode   func([]byte) error
	}{
		{"encoding-json", envelopeV1, func(r []byte) error { _, err := decodeV1(r); return err }},
		{"json-v2", envelopeV2, func(r []byte) error { _, err := decodeV2(r); return err }},
		{"goccy", envelopeGoccy, func(r []byte) error { _, err := decodeGoccy(r); return err }},
		{"hand", envelopeHand, func(r []byte) error { _, err := decodeHand(r); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				objs, err := c.envelope(bodies[i%len(bodies)])
				if err != nil || len(objs) != 100 {
					b.Fatalf("%d objects: %v", len(objs), err)
				}
				for _, o := range objs {
					if err := c.decode(o); err != nil {
						b.Fatal(err)
					}
				}
				i++
			}
		})
	}
}
