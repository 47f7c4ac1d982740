package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/publisher-dev/publisher/internal/amqpname"
	"github.com/publisher-dev/publisher/publisher"
)

// entry is the message object of /v1/batch and /v1/stream (the README's
// "Batch and streaming publish" section). Absent and null fields mean the
// single publish's defaults; pointers tell absent from zero.
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

// errNotObject is decodeEntry's error for JSON that is not an object.
var errNotObject = errors.New("not a JSON object")

// decodeEntry parses one message object and validates it with the limits,
// allow-list and defaults of the single publish. It returns the message, or
// the entry's answer (400, 403, 413); msg.MessageID is set whenever the entry
// gave a usable one, so that even a refusal names it. A generated id is given
// to a message without one. It returns errNotObject (wrapped) for JSON that is
// not an object at all. idem is the entry's idempotency key (entryIdem).
//
// The object is decoded by encoding/json/v2 (entryOptions): it accepts what
// encoding/json accepted, with the same values, except a name given twice,
// invalid UTF-8 and anything after the object, which it refuses
// (docs/performance.md, "Decoding message objects"); a refusal is worded by
// entryErrorText. FuzzDecodeEntry holds both to encoding/json's answers.
func (h *Handler) decodeEntry(raw []byte) (msg *publisher.Message, idem entryIdem, bad *problem, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, idem, nil, errNotObject
	}
	var e entry
	if err := jsonv2.Unmarshal(raw, &e, entryOptions); err != nil {
		return &publisher.Message{MessageID: idOf(raw)}, idem, badRequestf("malformed message object: %s", entryErrorText(raw, err)), nil
	}
	msg = &publisher.Message{Persistent: true, Mandatory: true}
	if len(e.MessageID) <= maxShortStr && utf8.ValidString(e.MessageID) {
		msg.MessageID = e.MessageID
	}
	if bad := h.fillEntry(msg, &e); bad != nil {
		return msg, idem, bad, nil
	}
	if idem, bad = idemOfEntry(&e); bad != nil {
		return msg, idem, bad, nil
	}
	if msg.MessageID == "" {
		msg.MessageID = publisher.NewMessageID()
	}
	msg.Timestamp = h.now()
	return msg, idem, nil, nil
}

// fillEntry validates e into msg, in the single publish's order: allow-list
// (403), then the fields (400), then the body's size (413).
func (h *Handler) fillEntry(msg *publisher.Message, e *entry) *problem {
	if e.Exchange == nil {
		return badRequestf(`exchange is required ("amq.default" or "" for the default exchange)`)
	}
	exchange := exchangeFromPath(*e.Exchange)
	if h.allowed != nil {
		if _, ok := h.allowed[exchange]; !ok {
			return refuse(http.StatusForbidden, "exchange not allowed")
		}
	}
	if !amqpname.ValidExchange(exchange) {
		return badRequestf("invalid exchange name: use letters, digits, '-', '_', '.', ':' (at most 255 bytes)")
	}
	msg.Exchange = exchange
	strs := [...]struct {
		name string
		v    string
		to   *string
	}{
		{"message_id", e.MessageID, &msg.MessageID}, {"routing_key", e.RoutingKey, &msg.RoutingKey},
		{"content_type", e.ContentType, &msg.ContentType}, {"content_encoding", e.ContentEncoding, &msg.ContentEncoding},
		{"correlation_id", e.CorrelationID, &msg.CorrelationID}, {"reply_to", e.ReplyTo, &msg.ReplyTo},
		{"type", e.Type, &msg.Type},
	}
	for _, f := range strs {
		if len(f.v) > maxShortStr {
			return badRequestf("%s longer than 255 bytes", f.name)
		}
		*f.to = f.v
	}
	if e.ExpirationMS != nil {
		n, err := strconv.ParseUint(e.ExpirationMS.String(), 10, 64)
		if err != nil || n > maxExpiration {
			return badRequestf("expiration_ms must be a whole number of milliseconds from 0 to 2147483647")
		}
		msg.Expiration = strconv.FormatUint(n, 10)
	}
	if e.Priority != nil {
		n, err := strconv.ParseUint(e.Priority.String(), 10, 8)
		if err != nil {
			return badRequestf("priority must be a whole number from 0 to 255")
		}
		msg.Priority = uint8(n)
	}
	if e.Persistent != nil {
		msg.Persistent = *e.Persistent
	}
	if e.Mandatory != nil {
		msg.Mandatory = *e.Mandatory
	}
	if len(e.Headers) > 0 {
		msg.Headers = make(map[string]any, len(e.Headers))
		for k, v := range e.Headers {
			val, ok := headerValue(v)
			if !ok || k == "" || len(k) > maxShortStr {
				return badHeader(e.Headers)
			}
			msg.Headers[k] = val
		}
	}
	switch {
	case e.Body != nil && e.BodyBase64 != nil:
		return badRequestf("give body or body_base64, not both")
	case e.Body != nil:
		msg.Body = []byte(*e.Body)
	case e.BodyBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*e.BodyBase64)
		if err != nil {
			return badRequestf("body_base64 is not valid base64 (standard encoding, padded)")
		}
		msg.Body = b
	}
	if int64(len(msg.Body)) > h.maxBody {
		return refuse(http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(h.maxBody, 10)+" bytes")
	}
	return nil
}

// badHeader is the refusal of a message object's headers, naming the first
// bad one in name order, so the same request always gets the same answer (a
// map's order would name any of them).
func badHeader(headers map[string]any) *problem {
	for _, k := range slices.Sorted(maps.Keys(headers)) {
		if k == "" || len(k) > maxShortStr {
			return badRequestf("headers: a name must have 1 to 255 bytes")
		}
		if _, ok := headerValue(headers[k]); !ok {
			return badRequestf("headers.%s: must be a string, a number or a boolean", k)
		}
	}
	return nil
}

// headerValue converts a JSON header value to the AMQP table type it is sent
// as: a string, a bool, an int64 for a whole number that fits (an AMQP long),
// else a float64.
func headerValue(v any) (any, bool) {
	switch v := v.(type) {
	case string, bool:
		return v, true
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i, true
		}
		f, err := v.Float64()
		if err != nil || math.IsInf(f, 0) {
			return nil, false
		}
		return f, true
	}
	return nil, false
}

// idOf is the message_id of a message object that did not decode, when it
// can still be read (a refusal then names it).
func idOf(raw []byte) string {
	var v struct {
		MessageID string `json:"message_id"`
	}
	if json.Unmarshal(raw, &v) != nil || len(v.MessageID) > maxShortStr || !utf8.ValidString(v.MessageID) {
		return ""
	}
	return v.MessageID
}

// entryErrorText words decodeEntry's refusal of raw (err, from
// encoding/json/v2) as encoding/json worded it: a refusal costs a second
// decoding, and every answer to a malformed object stays what it was. What
// encoding/json accepted and v2 refuses (a name given twice, invalid UTF-8,
// something after the object) is worded by v2.
func entryErrorText(raw []byte, err error) string {
	var e entry
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if v1err := dec.Decode(&e); v1err != nil {
		return jsonErrorText(v1err)
	}
	return strictErrorText(err)
}

// strictErrorText words a refusal of encoding/json/v2 that encoding/json
// would have accepted: "duplicate object member name \"exchange\"", "invalid
// UTF-8 within \"/body\" after offset 42", "invalid character 'x' after
// top-level value after offset 20".
func strictErrorText(err error) string {
	return strings.TrimPrefix(strings.TrimPrefix(err.Error(), "jsontext: "), "json: ")
}

// jsonErrorText is a decoding error in words a client can act on (the
// offset of a syntax error, the field of a type error).
func jsonErrorText(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te) && te.Field != "":
		return fmt.Sprintf("%s: a JSON %s is not valid here", te.Field, te.Value)
	case errors.As(err, &te):
		return fmt.Sprintf("a JSON %s is not valid at byte %d", te.Value, te.Offset)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}
