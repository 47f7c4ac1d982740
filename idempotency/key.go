package idempotency

import (
	"errors"
	"unicode/utf8"

	"github.com/dunglas/httpsfv"
)

// MaxKeyBytes is the longest key, in bytes of UTF-8.
const MaxKeyBytes = 255

// Errors of ParseHeader and CheckKey: a request with a key of another form
// is answered 400 with the error's words.
var (
	ErrKeyRepeated = errors.New("Idempotency-Key given more than once")
	ErrKeyForm     = errors.New("Idempotency-Key must be 1 to 255 bytes of UTF-8 without control characters, bare or as a quoted string (RFC 8941)")
)

// ParseHeader reads the Idempotency-Key field of a request from its values
// (http.Header's slice for the canonical name): "" and nil when there is
// none.
//
// The draft makes the field an RFC 8941 Item whose value is a String
// ("8e03978e-…" in double quotes, with \" and \\ escapes, printable ASCII):
// such a value is parsed as one (github.com/dunglas/httpsfv) and the key is
// the string inside the quotes; parameters of the Item are refused, the
// draft defining none. Most clients (Stripe's, and the APIs the draft lists)
// send the key bare, without quotes: any other value is the key as it is.
// Either way the key has 1 to MaxKeyBytes bytes of valid UTF-8 without
// control characters, so "abc" and `"abc"` are the same key. More than one
// field line is refused (the draft: a client MUST NOT send more than one).
func ParseHeader(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", ErrKeyRepeated
	}
	v := values[0]
	if len(v) > 0 && v[0] == '"' {
		item, err := httpsfv.UnmarshalItem(values)
		if err != nil {
			return "", ErrKeyForm
		}
		s, ok := item.Value.(string)
		if !ok || (item.Params != nil && len(item.Params.Names()) > 0) {
			return "", ErrKeyForm
		}
		v = s
	}
	if err := CheckKey(v); err != nil {
		return "", err
	}
	return v, nil
}

// CheckKey is nil when k may be a key: 1 to MaxKeyBytes bytes of valid
// UTF-8 without control characters (the idempotency_key of a batch or
// stream message, or a header's value).
func CheckKey(k string) error {
	if len(k) == 0 || len(k) > MaxKeyBytes || !utf8.ValidString(k) {
		return ErrKeyForm
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ErrKeyForm
		}
	}
	return nil
}
