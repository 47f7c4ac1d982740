package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

const hexDigits = "0123456789abcdef"

// Hand-written: a stream's result line with appendResult took 96 ns and no
// allocation against 483 ns (json.Marshal) and 741 ns (json/v2's Marshal) in
// BenchmarkAppendResult.
//
// appendJSONString appends s as a JSON string, escaped exactly as encoding/json
// does: '"', '\\' and control characters escaped, '<', '>', '&', U+2028 and
// U+2029 escaped as \u sequences, and each byte of invalid UTF-8 replaced by
// \ufffd. The fuzz test checks it against json.Marshal.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// entryOptions decode a message object (decodeEntry) with encoding/json/v2
// as encoding/json (with UseNumber and DisallowUnknownFields) decoded it:
// unknown names refused, names matched case-insensitively (v1's folding, '_'
// and '-' significant), a number in headers kept as a json.Number, and
// expiration_ms and priority read from a JSON number or a JSON string
// holding one. v2's own defaults stay: a name given twice and invalid UTF-8
// are refused (docs/performance.md, "Decoding message objects").
var entryOptions = jsonv2.JoinOptions(
	jsonv2.RejectUnknownMembers(true),
	jsonv2.MatchCaseInsensitiveNames(true),
	jsonv1.MatchCaseSensitiveDelimiter(true),
	jsonv2.WithUnmarshalers(jsonv2.JoinUnmarshalers(numberInAny, numberField)),
)

// numberInAny decodes a JSON number held by an any (a header's value) as a
// json.Number, as encoding/json's UseNumber did; every other kind as v2 does.
var numberInAny = jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, v *any) error {
	if dec.PeekKind() != '0' {
		return errors.ErrUnsupported
	}
	raw, err := dec.ReadValue()
	if err != nil {
		return err
	}
	*v = json.Number(raw)
	return nil
})

// errNotNumber is numberField's refusal.
var errNotNumber = errors.New("not a number")

// numberField decodes a json.Number field as encoding/json did: from a JSON
// number, or from a JSON string holding exactly one.
var numberField = jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, n *json.Number) error {
	raw, err := dec.ReadValue()
	if err != nil {
		return err
	}
	switch raw.Kind() {
	case '0':
		*n = json.Number(raw)
		return nil
	case '"':
		s, err := jsontext.AppendUnquote(nil, raw)
		if err == nil && isJSONNumber(s) {
			*n = json.Number(s)
			return nil
		}
	}
	return errNotNumber
})

// isJSONNumber reports whether s is exactly one JSON number (no space
// around it).
func isJSONNumber(s []byte) bool {
	return len(s) > 0 && (s[0] == '-' || '0' <= s[0] && s[0] <= '9') &&
		'0' <= s[len(s)-1] && s[len(s)-1] <= '9' && json.Valid(s)
}

// batchOptions read a batch's envelope: syntax only, and lenient, so that a
// name given twice or invalid UTF-8 inside a message object is that entry's
// 400 (decodeEntry), not the whole batch's.
var batchOptions = jsonv2.JoinOptions(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))

// errBatchShape is splitBatch's error for a body that is not
// {"messages": [...]} (batchErrorText words it).
var errBatchShape = errors.New("not a batch")

// errDuplicateMessages is splitBatch's error for a second "messages".
var errDuplicateMessages = errors.New(`"messages" given twice`)

// splitBatch returns the elements of body's "messages" array, each a slice
// of body, reading the body once with a jsontext.Decoder. As json.Unmarshal
// into struct{Messages *[]json.RawMessage} did, it matches "messages"
// case-insensitively and skips other names; it refuses a second "messages"
// (errDuplicateMessages), and returns errBatchShape (or a syntax error)
// for anything that encoding/json refused too. A nil slice without error
// means "messages" was absent or null.
func splitBatch(body []byte) ([][]byte, error) {
	dec := jsontext.NewDecoder(bytes.NewBuffer(body), batchOptions)
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, err
	}
	if tok.Kind() != '{' {
		return nil, errBatchShape
	}
	var raws [][]byte
	seen := false
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return nil, err
		}
		if !strings.EqualFold(name.String(), "messages") {
			if err := dec.SkipValue(); err != nil {
				return nil, err
			}
			continue
		}
		if seen {
			return nil, errDuplicateMessages
		}
		seen = true
		switch dec.PeekKind() {
		case 'n':
			if _, err := dec.ReadToken(); err != nil {
				return nil, err
			}
			continue
		case '[':
		default:
			return nil, errBatchShape
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		raws = make([][]byte, 0, 64)
		for dec.PeekKind() != ']' {
			v, err := dec.ReadValue()
			if err != nil {
				return nil, err
			}
			end := int(dec.InputOffset())
			raws = append(raws, body[end-len(v):end:end])
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, err
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, errBatchShape // something after the object
	}
	return raws, nil
}
