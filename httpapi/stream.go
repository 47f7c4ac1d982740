package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/publisher-dev/publisher/apps"
	"github.com/publisher-dev/publisher/idempotency"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/relay"
	"github.com/publisher-dev/publisher/tracing"
)

// Stream limits. A stream is one long request, so the server's per-request
// timeouts do not apply to it; these do instead.
const (
	// streamIdleTimeout: a client that sends no byte for this long while
	// its results are all written has gone; the stream ends.
	streamIdleTimeout = 2 * time.Minute
	// streamWriteTimeout: a client that reads no result for this long while
	// results wait stalls only its own stream (the window stops the reading);
	// past it the stream ends and the rest is given up.
	streamWriteTimeout = 30 * time.Second
	// streamGroup bounds the lines already received that are handed over
	// together (they share the spool's group commit).
	streamGroup = 256
	ndjson      = "application/x-ndjson"
)

var ndjsonContentType = []string{ndjson}

// serveStream answers POST /v1/stream: message objects in, one per line
// (NDJSON), for as long as the client sends; results out on the same
// request, full duplex, one line per message as its outcome is known
// ({"index": N, "message_id", "status", "outcome" | "error"}, N counting the
// lines from 0; empty lines are skipped, not counted), in any order. At most
// StreamWindow lines are taken and not answered: beyond that the handler
// stops reading (backpressure, no buffering without bound). A malformed line
// gets its own 400, a line out of the app's scope its own 403 (checked
// against the apps in force when it is read). Over the app's rate the
// handler waits before it hands the next line over, and stops reading
// meanwhile: the stream slows down to the rate rather than answering 429. The answer ends once the client closed its side and
// every result was written. While the service shuts down, every line read is
// answered 503 (not published: the client should stop sending and go
// elsewhere); at the end of the drain (the request's context is cancelled)
// what is still waiting is answered like a single publish (503 not
// published, 504 may still arrive, 202 spooled), the stream ends, and lines
// not read by then get no result.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, th tracing.Headers) {
	// A refusal comes before the body is read, and a streaming client may
	// wait for the answer before it sends anything: net/http would first try
	// to read (and discard) the body, and the answer would not come. Closing
	// the connection after the refusal answers at once.
	w.Header()["Connection"] = []string{"close"}
	app, err := h.admitBatch(w, r, ndjson)
	if err != nil {
		h.fail(w, err, "")
		return
	}
	if p := refuseRequestKey(r); p != nil {
		h.fail(w, p, "")
		return
	}
	if err := h.acceptingNow(); err != nil {
		h.fail(w, err, "")
		return
	}
	delete(w.Header(), "Connection")
	h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	h.onStream(1)
	defer h.onStream(-1)

	rc := http.NewResponseController(w)
	// HTTP/1.1 needs full duplex to read the body after the answer began
	// (HTTP/2 always has it, and says it is not supported).
	if err := rc.EnableFullDuplex(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		h.fail(w, refuse(http.StatusInternalServerError, "cannot stream: "+err.Error()), "")
		return
	}
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	hdr := w.Header()
	hdr["Content-Type"] = ndjsonContentType[:1:1]
	hdr["X-Content-Type-Options"] = noSniff[:1:1]
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	h.onResponse(http.StatusOK)

	st := &stream{
		h: h, ctx: r.Context(), th: th, async: prefersAsync(r.Header), rc: rc, w: w,
		req: r, app: app, appName: app.Name(),
		body:    bufio.NewReaderSize(r.Body, 64<<10),
		window:  make(chan struct{}, h.streamWindow),
		quit:    make(chan struct{}),
		notify:  make(chan struct{}, 1),
		pending: map[int]*streamLine{},
		maxLine: int(h.maxBody)*4/3 + 64<<10, // a base64 body and the other fields
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		st.read()
	}()
	st.write(readerDone)
	<-readerDone
}

// stream is one /v1/stream request: its reader goroutine takes lines and
// hands them over; the handler's goroutine (write) writes the results, gives
// up on lines past their deadline, and watches the request and the service.
type stream struct {
	h       *Handler
	ctx     context.Context
	th      tracing.Headers // the request's trace context, carried into every message
	async   bool
	rc      *http.ResponseController
	w       http.ResponseWriter
	body    *bufio.Reader
	maxLine int
	req     *http.Request // its Authorization header finds the app again after a reload
	// appName is the app of the request's token when the stream opened: the
	// app its results are counted for.
	appName string
	// set and app are the apps in force when the last line was checked and
	// the token's app in them (nil: none); set is nil until the first line.
	// Owned by the reader goroutine (admitLine).
	set *apps.Set
	app *apps.App
	// keyed holds the idempotency keys claimed for the lines taken and not
	// handed over yet, by line index (owned by the reader goroutine: take
	// adds, send takes them).
	keyed map[int]keyedLine
	// window holds a token per line read and not answered yet.
	window chan struct{}
	quit   chan struct{} // closed by write: the reader stops
	// readMu orders the reader's read deadline for its next line (armRead)
	// with write's stop (stopReading: quit closed, the deadline now), so a
	// stopped reader never sets a later deadline and blocks on an idle
	// client for streamIdleTimeout.
	readMu sync.Mutex

	mu       sync.Mutex
	pending  map[int]*streamLine // handed over, no outcome yet, by line index
	order    []int               // pending indexes in the order handed over (= deadline order)
	ready    []byte              // result lines to write
	readyN   int                 // results in ready (window tokens to give back)
	readDone bool                // the reader has returned
	notify   chan struct{}       // capacity 1: ready or readDone changed
}

// streamLine is a line handed to the Publisher and not answered yet.
type streamLine struct {
	id       string
	deadline time.Time
	k        int // its position in its Send call
	giveUp   func(int, error) (relay.Delivery, error)
	claim    idempotency.Claim // its idempotency key's, if it has one
}

// keyedLine is the idempotency key claimed for a line.
type keyedLine struct {
	claim idempotency.Claim
	ref   relay.KeyRef
}

// answer queues the result of line index and wakes the writer.
func (st *stream) answer(index int, res result) {
	st.mu.Lock()
	st.answerLocked(index, res)
	st.mu.Unlock()
}

func (st *stream) answerLocked(index int, res result) {
	st.h.onMessage(st.appName, res.code)
	st.ready = appendResult(st.ready, index, res)
	st.ready = append(st.ready, '\n')
	st.readyN++
	select {
	case st.notify <- struct{}{}:
	default:
	}
}

// read is the reader goroutine. Each line read holds a window token until
// its result is written; a line not counted (empty) gives it back at once.
func (st *stream) read() {
	defer func() {
		st.mu.Lock()
		st.readDone = true
		st.mu.Unlock()
		select {
		case st.notify <- struct{}{}:
		default:
		}
	}()
	index := 0
	var group []*publisher.Message
	var lines []int
	for {
		select {
		case st.window <- struct{}{}:
		case <-st.quit:
			return
		}
		group, lines = group[:0], lines[:0]
		// One line, waiting for it; then the lines already received, while
		// the window allows, go together.
		for first := true; ; first = false {
			if !first && (len(group) >= streamGroup || !st.hasLine() || !st.tryToken()) {
				break
			}
			raw, err := st.readLine()
			switch {
			case errors.Is(err, errLineTooLong):
				st.answer(index, result{code: http.StatusRequestEntityTooLarge, text: "line longer than " + strconv.Itoa(st.maxLine) + " bytes"})
				index++
				continue
			case err != nil:
				<-st.window
				if len(group) > 0 {
					st.send(group, lines)
				}
				return // EOF, the client went away, or the reading was stopped
			case len(bytes.TrimSpace(raw)) == 0:
				<-st.window
				continue
			}
			group, lines = st.take(raw, index, group, lines)
			index++
		}
		if len(group) > 0 {
			st.send(group, lines)
		}
	}
}

// tryToken takes a window token if one is free.
func (st *stream) tryToken() bool {
	select {
	case st.window <- struct{}{}:
		return true
	default:
		return false
	}
}

// take parses the line index: a message to hand over is appended to group,
// anything else is answered at once (a line out of the app's scope 403).
// A line over the app's rate waits for it, after group was handed over
// (waitRate).
func (st *stream) take(raw []byte, index int, group []*publisher.Message, lines []int) ([]*publisher.Message, []int) {
	if st.h.accepting != nil {
		if err := st.h.accepting(); err != nil {
			st.answer(index, result{code: http.StatusServiceUnavailable, text: "service unavailable: shutting down; the message was not published"})
			return group, lines
		}
	}
	msg, idem, bad, err := st.h.decodeEntry(raw)
	switch {
	case err != nil:
		st.answer(index, result{code: http.StatusBadRequest, text: "malformed line: " + err.Error()})
	case bad != nil:
		st.answer(index, resultOf(msg.MessageID, 0, bad))
	default:
		if p := st.admitLine(msg); p != nil {
			st.answer(index, resultOf(msg.MessageID, 0, p))
			break
		}
		var ok bool
		if group, lines, ok = st.waitRate(group, lines); !ok {
			st.answer(index, result{id: msg.MessageID, code: http.StatusServiceUnavailable, text: "the stream ended while the line waited for the app's rate; the message was not published"})
			break
		}
		if idem.key != "" {
			if res, done := st.beginKey(index, msg, idem); done {
				st.answer(index, res)
				break
			}
		}
		st.h.startSpan(st.ctx, st.th, msg, st.appName)
		group = append(group, msg)
		lines = append(lines, index)
	}
	return group, lines
}

// send hands a group of lines over.
func (st *stream) send(group []*publisher.Message, lines []int) {
	deadline := time.Now().Add(st.h.confirmTimeout)
	entries := make([]*streamLine, len(group))
	opts := relay.SendOptions{Async: st.async, Deadline: deadline}
	var claims []idempotency.Claim
	if len(st.keyed) > 0 {
		claims = make([]idempotency.Claim, len(group))
		opts.Keys = make([]relay.KeyRef, len(group))
		for k, index := range lines {
			if kl, ok := st.keyed[index]; ok {
				claims[k], opts.Keys[k] = kl.claim, kl.ref
				delete(st.keyed, index)
			}
		}
	}
	st.mu.Lock()
	for k, msg := range group {
		entries[k] = &streamLine{id: msg.MessageID, deadline: deadline, k: k}
		if claims != nil {
			entries[k].claim = claims[k]
		}
		st.pending[lines[k]] = entries[k]
		st.order = append(st.order, lines[k])
	}
	st.mu.Unlock()
	lines = append([]int(nil), lines...) // the callback outlives the caller's slice
	giveUp := st.h.send.Send(st.ctx, group, opts, func(k int, d relay.Delivery, err error) {
		if claims != nil {
			keyOutcome(claims[k], d, err, true)
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		index := lines[k]
		if l := st.pending[index]; l != nil {
			delete(st.pending, index)
			st.answerLocked(index, resultOf(l.id, d, err))
		}
	})
	st.mu.Lock()
	for _, e := range entries {
		e.giveUp = giveUp
	}
	st.mu.Unlock()
}

var (
	errLineTooLong = errors.New("httpapi: line too long")
	errStopped     = errors.New("httpapi: the stream stopped reading")
)

// armRead sets the read deadline of the next line, unless the reading was
// stopped (false).
func (st *stream) armRead() bool {
	st.readMu.Lock()
	defer st.readMu.Unlock()
	select {
	case <-st.quit:
		return false
	default:
	}
	_ = st.rc.SetReadDeadline(time.Now().Add(streamIdleTimeout))
	return true
}

// hasLine reports whether a whole line is already buffered.
func (st *stream) hasLine() bool {
	n := st.body.Buffered()
	if n == 0 {
		return false
	}
	b, _ := st.body.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// readLine reads one line (without its '\n'; the last line may lack one). A
// line over maxLine is skipped to its end and reported as errLineTooLong.
func (st *stream) readLine() ([]byte, error) {
	if !st.armRead() {
		return nil, errStopped
	}
	var line []byte
	for {
		frag, err := st.body.ReadSlice('\n')
		if len(line)+len(frag) > st.maxLine {
			line = nil
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = st.body.ReadSlice('\n')
			}
			if err == nil || errors.Is(err, io.EOF) {
				return nil, errLineTooLong
			}
			return nil, err
		}
		switch {
		case err == nil:
			if line == nil {
				return frag[:len(frag)-1], nil // valid until the next read: parsed before it
			}
			return append(line, frag[:len(frag)-1]...), nil
		case errors.Is(err, bufio.ErrBufferFull):
			line = append(line, frag...)
		case errors.Is(err, io.EOF) && len(line)+len(frag) > 0:
			return append(line, frag...), nil
		default:
			return nil, err
		}
	}
}

// write is the handler's loop: it writes results as they come, gives up on
// lines past their deadline, and ends the stream when the reader is done and
// everything is answered, when the request ends (the client went away, or a
// shutdown's drain is over: everything still waiting is given up), or when
// the client stops reading results for streamWriteTimeout.
func (st *stream) write(readerDone <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stopReading := func() {
		st.readMu.Lock()
		defer st.readMu.Unlock()
		select {
		case <-st.quit:
		default:
			close(st.quit)
			_ = st.rc.SetReadDeadline(time.Now()) // unblocks a Read in progress
		}
	}
	defer stopReading()
	for {
		st.mu.Lock()
		st.expireLocked(time.Now(), publisher.ErrConfirmTimeout)
		out, n := st.ready, st.readyN
		st.ready, st.readyN = nil, 0
		finished := st.readDone && len(st.pending) == 0 && n == 0
		next := st.nextDeadlineLocked()
		st.mu.Unlock()
		if n > 0 {
			if !st.flush(out, n) {
				st.abort(context.Canceled)
				return
			}
			continue
		}
		if finished {
			return
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-st.notify:
		case <-timer.C:
		case <-st.ctx.Done():
			stopReading()
			<-readerDone
			st.abort(context.Cause(st.ctx))
			return
		}
	}
}

// flush writes n results and gives their window tokens back; false when the
// client does not take them.
func (st *stream) flush(out []byte, n int) bool {
	_ = st.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	_, err := st.w.Write(out)
	if err == nil {
		err = st.rc.Flush()
	}
	for range n {
		<-st.window
	}
	return err == nil
}

// abort gives up on every line still pending (cause: why) and writes their
// results, best effort: the stream is ending.
func (st *stream) abort(cause error) {
	st.mu.Lock()
	st.expireLocked(time.Time{}, cause)
	out, n := st.ready, st.readyN
	st.ready, st.readyN = nil, 0
	st.mu.Unlock()
	if n > 0 {
		st.flush(out, n)
	}
}

// expireLocked gives up, with cause, on the pending lines whose deadline is
// at or before now (every pending line for a zero now).
func (st *stream) expireLocked(now time.Time, cause error) {
	for len(st.order) > 0 {
		index := st.order[0]
		l := st.pending[index]
		if l == nil { // answered already
			st.order = st.order[1:]
			continue
		}
		if !now.IsZero() && l.deadline.After(now) {
			return
		}
		if l.giveUp == nil {
			return // being handed over right now; its deadline is seen on the next pass
		}
		st.order = st.order[1:]
		delete(st.pending, index)
		d, err := l.giveUp(l.k, cause)
		keyOutcome(l.claim, d, err, false)
		st.answerLocked(index, resultOf(l.id, d, err))
	}
}

// nextDeadlineLocked is the deadline of the oldest pending line (zero: none).
func (st *stream) nextDeadlineLocked() time.Time {
	for _, index := range st.order {
		if l := st.pending[index]; l != nil {
			return l.deadline
		}
	}
	return time.Time{}
}
