package idempotency

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"math"
	"sync"
)

// Fingerprint identifies the content of a request: the first 16 bytes of
// the SHA-256 of its fields, framed (Hasher). 128 bits make an accidental
// collision between two requests of one key out of reach; a client that
// crafts one only gets its own first answer instead of a 422.
type Fingerprint [16]byte

// Hasher builds a Fingerprint from typed fields. Each field is written with
// a tag byte of its type and, for strings and bytes, its length, so no two
// different sequences of fields hash the same input ("ab","c" is not
// "a","bc"; an empty string is not an absent one when the caller writes a
// presence flag). The zero value is not usable: take one with NewHasher and
// give it back with Sum, which returns it to a pool (a fingerprint per
// keyed request: the pool saves its three allocations).
type Hasher struct {
	h   hash.Hash
	buf [binary.MaxVarintLen64 + 1]byte
	// scratch carries strings to h in pieces: h is an interface, and a
	// []byte(s) passed to it would be copied to the heap each time.
	scratch [256]byte
	sum     [sha256.Size]byte // Sum's output, here rather than on the stack, which the interface call would move to the heap
}

var hashers = sync.Pool{New: func() any { return &Hasher{h: sha256.New()} }}

// NewHasher returns an empty Hasher.
func NewHasher() *Hasher {
	x := hashers.Get().(*Hasher)
	x.h.Reset()
	return x
}

const (
	tagString = 's'
	tagBytes  = 'b'
	tagUint   = 'u'
	tagInt    = 'i'
	tagFloat  = 'f'
	tagBool   = 't'
)

func (x *Hasher) head(tag byte, n uint64) {
	x.buf[0] = tag
	k := binary.PutUvarint(x.buf[1:], n)
	x.h.Write(x.buf[:1+k])
}

// String writes a string field.
func (x *Hasher) String(s string) {
	x.head(tagString, uint64(len(s)))
	for len(s) > 0 {
		n := copy(x.scratch[:], s)
		_, _ = x.h.Write(x.scratch[:n])
		s = s[n:]
	}
}

// Bytes writes a bytes field.
func (x *Hasher) Bytes(b []byte) {
	x.head(tagBytes, uint64(len(b)))
	_, _ = x.h.Write(b)
}

// Uint writes an unsigned integer field.
func (x *Hasher) Uint(u uint64) { x.head(tagUint, u) }

// Int writes a signed integer field.
func (x *Hasher) Int(i int64) { x.head(tagInt, uint64(i)) }

// Float writes a floating-point field (by its bits: 1.0 and 1 differ from
// the integer 1, which Int writes).
func (x *Hasher) Float(f float64) { x.head(tagFloat, math.Float64bits(f)) }

// Bool writes a boolean field.
func (x *Hasher) Bool(b bool) {
	var u uint64
	if b {
		u = 1
	}
	x.head(tagBool, u)
}

// Sum is the fingerprint of what was written. It gives x back to the
// pool: x must not be used after.
func (x *Hasher) Sum() Fingerprint {
	var fp Fingerprint
	copy(fp[:], x.h.Sum(x.sum[:0]))
	hashers.Put(x)
	return fp
}
