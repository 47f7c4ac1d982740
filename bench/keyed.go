package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
)

// Modes (i) and (j): modes (a) and (f) with an idempotency key on every
// message (a single publish's Idempotency-Key, a batch message's
// idempotency_key), each key new, so the service claims, fingerprints and
// records every one and publishes it as usual: their ratios to (a) and (f)
// are what keys cost on the publish path (docs/performance.md).

// keyPlaceholder marks where a key goes in a prepared request: 32
// characters, the size of every key stampKeys writes.
const keyPlaceholder = "KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK"

// keyStamper rewrites the keys of one connection's prepared request before
// each round trip, in place: no allocation, as the lean client's own loop.
type keyStamper struct {
	offsets []int   // of each placeholder in the request
	prefix  [8]byte // random: keys of two connections, modes or rounds never meet
	seq     uint64
}

func newKeyStamper(req []byte) *keyStamper {
	s := &keyStamper{}
	_, _ = rand.Read(s.prefix[:])
	for i := 0; ; {
		j := bytes.Index(req[i:], []byte(keyPlaceholder))
		if j < 0 {
			return s
		}
		s.offsets = append(s.offsets, i+j)
		i += j + len(keyPlaceholder)
	}
}

// stamp writes a new key at every offset: 16 hex digits of the stamper's
// random prefix, 16 of a counter.
func (s *keyStamper) stamp(req []byte) {
	var raw [16]byte
	copy(raw[:8], s.prefix[:])
	for _, off := range s.offsets {
		s.seq++
		for k := range 8 {
			raw[8+k] = byte(s.seq >> (56 - 8*k))
		}
		hex.Encode(req[off:off+32], raw[:])
	}
}

// runServiceKeyed is mode (i): mode (a) with a new Idempotency-Key on every
// request.
func (b *bench) runServiceKeyed(ctx context.Context, w window) (merged, error) {
	u, h := b.publishRequest(b.svc)
	h.Set("Idempotency-Key", keyPlaceholder)
	return b.runKeyed(ctx, w, u, h, b.body, b.cfg.c, 1, func(code int, answer []byte, _ int) (int, int, error) {
		if err := checkAnswer(code, answer, http.StatusOK, []byte(`"confirmed"`)); err != nil {
			return 0, 1, err
		}
		return 1, 0, nil
	})
}

// runBatchKeyed is mode (j): mode (f) with a new idempotency_key on every
// message of every request.
func (b *bench) runBatchKeyed(ctx context.Context, w window) (merged, error) {
	obj, err := b.messageObject()
	if err != nil {
		return merged{}, err
	}
	obj = append(obj[:len(obj)-1], `,"idempotency_key":"`+keyPlaceholder+`"}`...)
	n := b.cfg.batchSize
	u := "http://" + b.svc.proc.APIAddr() + "/v1/batch"
	h := http.Header{"Content-Type": {"application/json"}}
	return b.runKeyed(ctx, w, u, h, batchBody(obj, n), b.cfg.batchConc, n, func(code int, answer []byte, n int) (int, int, error) {
		return countBatch(code, answer, n)
	})
}

// runKeyed runs conc workers on lean connections posting body to u, each
// request with new keys; count reads an answer of n messages.
func (b *bench) runKeyed(ctx context.Context, w window, u string, h http.Header, body []byte, conc, n int,
	count func(code int, answer []byte, n int) (int, int, error)) (merged, error) {
	conns := make([]*leanConn, conc)
	stampers := make([]*keyStamper, conc)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	for i := range conns {
		c, err := newLeanConn(u, h, body)
		if err != nil {
			return merged{}, err
		}
		c.maxAnswer = batchAnswerLimit(n)
		conns[i], stampers[i] = c, newKeyStamper(c.req)
	}
	return runClosedLoopN(ctx, w, conc, opTimeout, func(ctx context.Context, i int) (int, int, error) {
		stampers[i].stamp(conns[i].req)
		code, answer, err := conns[i].do(ctx)
		if err != nil {
			return 0, n, err
		}
		return count(code, answer, n)
	}), nil
}
