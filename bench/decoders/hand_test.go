package decoders

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// The hand-written prototype, for measurement only: the usual object
// (known names once each, strings without escapes, booleans, whole numbers,
// no headers) by hand, anything else by encoding/json; the envelope split by
// hand when it is exactly {"messages":[objects]}.

var errSlow = errors.New("not the usual object")

func decodeHand(raw []byte) (*entry, error) {
	var e entry
	if handEntry(raw, &e) != nil {
		return decodeV1(raw)
	}
	return &e, nil
}

func ws(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a string without escapes or control characters at i.
func plainString(b []byte, i int) (string, int, error) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, errSlow
	}
	i++
	start, ascii := i, true
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"':
			s := b[start:i]
			if !ascii && !utf8.Valid(s) {
				return "", 0, errSlow
			}
			return string(s), i + 1, nil
		case c == '\\' || c < 0x20:
			return "", 0, errSlow
		case c >= 0x80:
			ascii = false
		}
	}
	return "", 0, errSlow
}

func handEntry(b []byte, e *entry) error {
	i := ws(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errSlow
	}
	i = ws(b, i+1)
	var seen uint32
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		key, j, err := plainString(b, i)
		if err != nil {
			return err
		}
		i = ws(b, j)
		if i >= len(b) || b[i] != ':' {
			return errSlow
		}
		i = ws(b, i+1)
		var bit uint32
		var sp *string
		var pp **string
		var bp **bool
		var np **json.Number
		switch key {
		case "exchange":
			bit, pp = 1, &e.Exchange
		case "routing_key":
			bit, sp = 2, &e.RoutingKey
		case "message_id":
			bit, sp = 4, &e.MessageID
		case "body":
			bit, pp = 8, &e.Body
		case "body_base64":
			bit, pp = 16, &e.BodyBase64
		case "content_type":
			bit, sp = 32, &e.ContentType
		case "content_encoding":
			bit, sp = 64, &e.ContentEncoding
		case "correlation_id":
			bit, sp = 128, &e.CorrelationID
		case "reply_to":
			bit, sp = 256, &e.ReplyTo
		case "type":
			bit, sp = 512, &e.Type
		case "expiration_ms":
			bit, np = 1024, &e.ExpirationMS
		case "priority":
			bit, np = 2048, &e.Priority
		case "persistent":
			bit, bp = 4096, &e.Persistent
		case "mandatory":
			bit, bp = 8192, &e.Mandatory
		default:
			return errSlow
		}
		if seen&bit != 0 {
			return errSlow
		}
		seen |= bit
		switch {
		case sp != nil || pp != nil:
			s, j, err := plainString(b, i)
			if err != nil {
				return err
			}
			if sp != nil {
				*sp = s
			} else {
				*pp = &s
			}
			i = j
		case bp != nil:
			var v bool
			switch {
			case bytes.HasPrefix(b[i:], []byte("true")):
				v, i = true, i+4
			case bytes.HasPrefix(b[i:], []byte("false")):
				v, i = false, i+5
			default:
				return errSlow
			}
			*bp = &v
		case np != nil:
			j := i
			for j < len(b) && '0' <= b[j] && b[j] <= '9' {
				j++
			}
			if j == i || j-i > 18 || (b[i] == '0' && j-i > 1) {
				return errSlow
			}
			n := json.Number(b[i:j])
			*np = &n
			i = j
		}
		i = ws(b, i)
		switch {
		case i < len(b) && b[i] == ',':
			i = ws(b, i+1)
		case i < len(b) && b[i] == '}':
			if ws(b, i+1) != len(b) {
				return errSlow
			}
			return nil
		default:
			return errSlow
		}
	}
}

// envelopeHand splits {"messages":[objects]} by hand (string-aware brace
// matching), anything else by encoding/json.
func envelopeHand(b []byte) ([][]byte, error) {
	if out, ok := splitHand(b); ok {
		return out, nil
	}
	return envelopeV1(b)
}

func splitHand(b []byte) ([][]byte, bool) {
	const head = `"messages"`
	i := ws(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = ws(b, i+1)
	if !bytes.HasPrefix(b[i:], []byte(head)) {
		return nil, false
	}
	i = ws(b, i+len(head))
	if i >= len(b) || b[i] != ':' {
		return nil, false
	}
	i = ws(b, i+1)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	i = ws(b, i+1)
	out := make([][]byte, 0, 128)
	for i < len(b) && b[i] != ']' {
		if b[i] != '{' {
			return nil, false
		}
		start, depth, inString := i, 0, false
	scan:
		for ; i < len(b); i++ {
			c := b[i]
			if inString {
				switch c {
				case '\\':
					i++
				case '"':
					inString = false
				}
				continue
			}
			switch c {
			case '"':
				inString = true
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					break scan
				}
			}
		}
		if i >= len(b) {
			return nil, false
		}
		i++
		out = append(out, b[start:i])
		i = ws(b, i)
		if i < len(b) && b[i] == ',' {
			i = ws(b, i+1)
		}
	}
	if i >= len(b) {
		return nil, false
	}
	i = ws(b, i+1)
	if i >= len(b) || b[i] != '}' || ws(b, i+1) != len(b) {
		return nil, false
	}
	return out, true
}
