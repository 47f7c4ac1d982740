package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/publisher-dev/publisher/idempotency"
	"github.com/publisher-dev/publisher/publisher"
)

// The spool record format: what the relay writes as the data of one spool
// record (the spool frames it with its length, sequence number and CRC), and
// what dead-letter.log holds base64-encoded in its "data" field.
//
// Version 2, written since the format was made explicit: one version byte
// 0x02, then a JSON object with exactly the keys of record below
// ("message_id", "exchange", "routing_key", "body" (base64), ...). The keys
// are fixed by struct tags here, never by Go field names, so renaming a field
// of publisher.Message cannot change the format. A new incompatible format
// gets a new version byte; readers keep every older one.
//
// Version 1, written before: no version byte, the JSON object
// {"n": nonce, "r": request id, "m": message}, the message with the Go field
// names publisher.Message had then (recordV1Message keeps them). It starts
// with '{', which no later version byte is.
//
// Header values are JSON: strings, booleans and numbers; a number that is a
// whole number fitting int64 is read back as int64 (an AMQP long), any
// other as float64, so a header given as an integer stays one.
const recordVersion2 = 0x02

// record is version 2 of the format.
type record struct {
	// Nonce and RID let a waiting caller of this process match its record's
	// outcome (a record of an earlier process has another Nonce).
	Nonce           uint64         `json:"nonce"`
	RID             uint64         `json:"rid"`
	MessageID       string         `json:"message_id"`
	Exchange        string         `json:"exchange"`
	RoutingKey      string         `json:"routing_key"`
	Body            []byte         `json:"body"`
	ContentType     string         `json:"content_type,omitempty"`
	ContentEncoding string         `json:"content_encoding,omitempty"`
	CorrelationID   string         `json:"correlation_id,omitempty"`
	ReplyTo         string         `json:"reply_to,omitempty"`
	Type            string         `json:"type,omitempty"`
	Expiration      string         `json:"expiration,omitempty"`
	Priority        uint8          `json:"priority,omitempty"`
	Persistent      bool           `json:"persistent"`
	Mandatory       bool           `json:"mandatory"`
	Headers         map[string]any `json:"headers,omitempty"`
	Timestamp       time.Time      `json:"timestamp"`
	// The message's idempotency key, its scope (the app) and its request's
	// fingerprint (idempotency.Fingerprint, 16 bytes, base64 in the JSON),
	// when the request had a key: after a restart the key answers from the
	// spooled record (202, then 200 once forwarded). Added to version 2
	// compatibly: absent when there is no key, and ignored by a reader that
	// does not know them.
	IdemScope string `json:"idem_scope,omitempty"`
	IdemKey   string `json:"idem_key,omitempty"`
	IdemFP    []byte `json:"idem_fp,omitempty"`
}

// recordV1 and recordV1Message are version 1, frozen.
type recordV1 struct {
	Nonce uint64           `json:"n"`
	RID   uint64           `json:"r"`
	Msg   *recordV1Message `json:"m"`
}

type recordV1Message struct {
	Exchange        string
	RoutingKey      string
	Body            []byte
	MessageID       string
	ContentType     string
	ContentEncoding string
	CorrelationID   string
	ReplyTo         string
	Type            string
	Expiration      string
	Priority        uint8
	Persistent      bool
	Mandatory       bool
	Headers         map[string]any
	Timestamp       time.Time
}

// errUndecodable is a record no version of the format reads.
var errUndecodable = errors.New("relay: undecodable spool record")

// encodeRecord is msg (with the waiter's nonce and id, and its key when
// ref names one) in version 2.
func encodeRecord(nonce, rid uint64, msg *publisher.Message, ref KeyRef) ([]byte, error) {
	rec := record{
		Nonce: nonce, RID: rid, MessageID: msg.MessageID, Exchange: msg.Exchange, RoutingKey: msg.RoutingKey,
		Body: msg.Body, ContentType: msg.ContentType, ContentEncoding: msg.ContentEncoding,
		CorrelationID: msg.CorrelationID, ReplyTo: msg.ReplyTo, Type: msg.Type, Expiration: msg.Expiration,
		Priority: msg.Priority, Persistent: msg.Persistent, Mandatory: msg.Mandatory, Headers: msg.Headers,
		Timestamp: msg.Timestamp,
	}
	if ref.Key.Name != "" {
		rec.IdemScope, rec.IdemKey, rec.IdemFP = ref.Key.Scope, ref.Key.Name, ref.Fingerprint[:]
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+len(b))
	out[0] = recordVersion2
	copy(out[1:], b)
	return out, nil
}

// decodeRecord reads a record of any version.
func decodeRecord(data []byte) (nonce, rid uint64, msg *publisher.Message, err error) {
	nonce, rid, msg, _, err = decodeKeyedRecord(data)
	return nonce, rid, msg, err
}

// decodeKeyedRecord is decodeRecord with the record's key (a zero KeyRef
// for none; version 1 never has one).
func decodeKeyedRecord(data []byte) (nonce, rid uint64, msg *publisher.Message, ref KeyRef, err error) {
	if len(data) == 0 {
		return 0, 0, nil, ref, fmt.Errorf("%w: empty", errUndecodable)
	}
	switch data[0] {
	case recordVersion2:
		var r record
		if err := unmarshal(data[1:], &r); err != nil {
			return 0, 0, nil, ref, fmt.Errorf("%w: version 2: %w", errUndecodable, err)
		}
		if r.IdemKey != "" && len(r.IdemFP) == len(ref.Fingerprint) {
			ref.Key = idempotency.Key{Scope: r.IdemScope, Name: r.IdemKey}
			copy(ref.Fingerprint[:], r.IdemFP)
		}
		return r.Nonce, r.RID, &publisher.Message{
			Exchange: r.Exchange, RoutingKey: r.RoutingKey, Body: r.Body, MessageID: r.MessageID,
			ContentType: r.ContentType, ContentEncoding: r.ContentEncoding, CorrelationID: r.CorrelationID,
			ReplyTo: r.ReplyTo, Type: r.Type, Expiration: r.Expiration, Priority: r.Priority,
			Persistent: r.Persistent, Mandatory: r.Mandatory, Headers: headers(r.Headers), Timestamp: r.Timestamp,
		}, ref, nil
	case '{':
		var r recordV1
		if err := unmarshal(data, &r); err != nil || r.Msg == nil {
			if err == nil {
				err = errors.New("no message")
			}
			return 0, 0, nil, ref, fmt.Errorf("%w: version 1: %w", errUndecodable, err)
		}
		m := r.Msg
		return r.Nonce, r.RID, &publisher.Message{
			Exchange: m.Exchange, RoutingKey: m.RoutingKey, Body: m.Body, MessageID: m.MessageID,
			ContentType: m.ContentType, ContentEncoding: m.ContentEncoding, CorrelationID: m.CorrelationID,
			ReplyTo: m.ReplyTo, Type: m.Type, Expiration: m.Expiration, Priority: m.Priority,
			Persistent: m.Persistent, Mandatory: m.Mandatory, Headers: headers(m.Headers), Timestamp: m.Timestamp,
		}, ref, nil
	}
	return 0, 0, nil, ref, fmt.Errorf("%w: unknown version byte 0x%02x", errUndecodable, data[0])
}

// unmarshal decodes JSON with numbers kept as json.Number (headers converts
// them).
func unmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

// headers converts the json.Numbers of decoded header values: int64 when
// whole and in range, else float64; nested tables and arrays too.
func headers(h map[string]any) map[string]any {
	for k, v := range h {
		h[k] = headerValue(v)
	}
	return h
}

func headerValue(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case map[string]any:
		return headers(v)
	case []any:
		for i := range v {
			v[i] = headerValue(v[i])
		}
		return v
	}
	return v
}

// MessageIDOf returns the message id of a spool record's data, best effort
// (for reports about records that could not be read back whole): "" when it
// cannot tell.
func MessageIDOf(data []byte) string {
	if _, _, msg, err := decodeRecord(data); err == nil {
		return msg.MessageID
	}
	// A damaged record: look for the id's key in what is left.
	for _, key := range [][]byte{[]byte(`"message_id":`), []byte(`"MessageID":`)} {
		if i := bytes.Index(data, key); i >= 0 {
			var id string
			if err := json.NewDecoder(bytes.NewReader(data[i+len(key):])).Decode(&id); err == nil {
				return id
			}
		}
	}
	return ""
}
