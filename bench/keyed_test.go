package main

import (
	"bytes"
	"testing"
)

// Every placeholder gets a key of its own, and the next request new ones.
func TestKeyStamper(t *testing.T) {
	req := []byte("a " + keyPlaceholder + " b " + keyPlaceholder + " c")
	s := newKeyStamper(req)
	if len(s.offsets) != 2 {
		t.Fatalf("offsets %v", s.offsets)
	}
	s.stamp(req)
	first := append([]byte(nil), req...)
	k1, k2 := req[s.offsets[0]:s.offsets[0]+32], req[s.offsets[1]:s.offsets[1]+32]
	other := newKeyStamper(append([]byte(nil), req...))
	if bytes.Equal(k1, k2) || bytes.Contains(req, []byte("KKKK")) || bytes.Equal(s.prefix[:], other.prefix[:]) {
		t.Errorf("stamped %q", req)
	}
	s.stamp(req)
	if bytes.Equal(first, req) {
		t.Error("the second request has the first's keys")
	}
}
