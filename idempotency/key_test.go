package idempotency

import (
	"errors"
	"strings"
	"testing"
)

func TestParseHeader(t *testing.T) {
	long := strings.Repeat("k", MaxKeyBytes)
	for _, tc := range []struct {
		values []string
		want   string
		err    error
	}{
		{nil, "", nil},
		{[]string{"8e03978e-40d5-43e8-bc93-6894a57f9324"}, "8e03978e-40d5-43e8-bc93-6894a57f9324", nil},
		{[]string{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`}, "8e03978e-40d5-43e8-bc93-6894a57f9324", nil}, // the draft's form
		{[]string{`"a \"quoted\" \\ key"`}, `a "quoted" \ key`, nil},
		{[]string{"clé-ünïcode ✓"}, "clé-ünïcode ✓", nil},
		{[]string{long}, long, nil},
		{[]string{`"abc";p=1`}, "", ErrKeyForm}, // parameters: none defined
		{[]string{`"abc`}, "", ErrKeyForm},
		{[]string{`""`}, "", ErrKeyForm},
		{[]string{""}, "", ErrKeyForm},
		{[]string{long + "k"}, "", ErrKeyForm},
		{[]string{"a\x01b"}, "", ErrKeyForm},
		{[]string{"\xff\xfe"}, "", ErrKeyForm},
		{[]string{"a", "b"}, "", ErrKeyRepeated},
	} {
		got, err := ParseHeader(tc.values)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("ParseHeader(%q) = %q, %v; want %q, %v", tc.values, got, err, tc.want, tc.err)
		}
	}
}

// The fields are framed: moving a byte from one field to the next, or
// changing a type, changes the fingerprint.
func TestHasherFraming(t *testing.T) {
	sum := func(f func(h *Hasher)) Fingerprint { h := NewHasher(); f(h); return h.Sum() }
	cases := []Fingerprint{
		sum(func(h *Hasher) { h.String("ab"); h.String("c") }),
		sum(func(h *Hasher) { h.String("a"); h.String("bc") }),
		sum(func(h *Hasher) { h.Bytes([]byte("ab")); h.String("c") }),
		sum(func(h *Hasher) { h.Int(1) }),
		sum(func(h *Hasher) { h.Uint(1) }),
		sum(func(h *Hasher) { h.Float(1) }),
		sum(func(h *Hasher) { h.Bool(true) }),
		sum(func(h *Hasher) { h.String(strings.Repeat("x", 1000)) }),
		sum(func(h *Hasher) { h.String(strings.Repeat("x", 999)) }),
	}
	seen := map[Fingerprint]int{}
	for i, c := range cases {
		if j, ok := seen[c]; ok {
			t.Errorf("cases %d and %d hash the same", j, i)
		}
		seen[c] = i
	}
	if a, b := sum(func(h *Hasher) { h.String("same") }), sum(func(h *Hasher) { h.String("same") }); a != b {
		t.Error("the same input hashed differently")
	}
}
