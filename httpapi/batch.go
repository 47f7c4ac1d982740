package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/publisher-dev/publisher/cloudevents"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/tracing"
)

const (
	batchPath  = "/v1/batch"
	streamPath = "/v1/stream"
)

// result is the answer for one message of a batch or a stream.
type result struct {
	id   string
	code int    // 200, 202, or the single publish's error status
	text string // the error, for codes other than 200 and 202
}

func (r result) outcome() string {
	switch r.code {
	case http.StatusOK:
		return "confirmed"
	case http.StatusAccepted:
		return "spooled"
	}
	return ""
}

// resultOf maps a message's delivery or error to its result, as the single
// publish would answer it.
func resultOf(id string, d publisher.Delivery, err error) result {
	if err == nil {
		if d == publisher.Spooled {
			return result{id: id, code: http.StatusAccepted}
		}
		return result{id: id, code: http.StatusOK}
	}
	code, text, _ := classify(err)
	if code == 0 {
		code, text = http.StatusServiceUnavailable, "service unavailable: cannot take messages now"
		if errors.Is(err, context.Canceled) {
			text = "request cancelled"
		}
	}
	return result{id: id, code: code, text: text}
}

// appendResult appends r as a JSON object, with "index" first when index >= 0.
func appendResult(b []byte, index int, r result) []byte {
	b = append(b, '{')
	if index >= 0 {
		b = append(b, `"index":`...)
		b = strconv.AppendInt(b, int64(index), 10)
		b = append(b, ',')
	}
	b = append(b, `"message_id":`...)
	b = appendJSONString(b, r.id)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.code), 10)
	if o := r.outcome(); o != "" {
		b = append(b, `,"outcome":"`...)
		b = append(b, o...)
		b = append(b, '"')
	} else {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, r.text)
	}
	return append(b, '}')
}

// settlements collects the outcomes of messages handed to Publisher.Send:
// done is Send's callback (any goroutine, never blocks); close gives up on
// the ones still open. After close, done changes nothing.
type settlements struct {
	mu     sync.Mutex
	out    []result // by the index given to Send
	open   []bool   // not settled yet
	left   int
	closed bool
	all    chan struct{} // closed when left reaches 0
	ids    []string
	// onSettle, if set, is called (under mu) with each index as it settles,
	// by done or by close.
	onSettle func(i int)
}

func newSettlements(ids []string) *settlements {
	s := &settlements{out: make([]result, len(ids)), open: make([]bool, len(ids)), left: len(ids),
		all: make(chan struct{}), ids: ids}
	for i := range s.open {
		s.open[i] = true
	}
	if s.left == 0 {
		close(s.all)
	}
	return s
}

func (s *settlements) done(i int, d publisher.Delivery, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.open[i] {
		return
	}
	s.settleLocked(i, resultOf(s.ids[i], d, err))
}

func (s *settlements) settleLocked(i int, r result) {
	s.out[i] = r
	s.open[i] = false
	s.left--
	if s.left == 0 {
		close(s.all)
	}
	if s.onSettle != nil {
		s.onSettle(i)
	}
}

// close ends the wait: every message still open is given up with cause and
// answered what giveUp says.
func (s *settlements) close(giveUp func(int, error) (publisher.Delivery, error), cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, open := range s.open {
		if open {
			d, err := giveUp(i, cause)
			s.settleLocked(i, resultOf(s.ids[i], d, err))
		}
	}
	s.closed = true
}

// serveBatch answers POST /v1/batch: {"messages": [message objects]} in,
// {"results": [...]} out, one result per message in request order: 200 when
// every message was confirmed, 202 when every one was confirmed or spooled,
// else 207. The request is refused whole (nothing published) when it is not
// authorized (401), not JSON of that shape (400 naming the offset or the
// entry's index), over PUBLISHER_MAX_BATCH_MESSAGES or
// PUBLISHER_MAX_BATCH_BYTES (413), or not accepted now (503). A message
// object with a bad field gets its own 400 (or the 403 or 413 of the single
// publish) and costs nothing else. No ordering or atomicity across entries,
// but the messages to one exchange and routing key are published in request
// order.
func (h *handler) serveBatch(w http.ResponseWriter, r *http.Request, th tracing.Headers) {
	ceBatch := cloudevents.ContentMode(r.Header.Get("Content-Type")) == cloudevents.ModeBatch
	want := "application/json"
	if ceBatch {
		want = cloudevents.MediaTypeBatch
	}
	if !h.admit(w, r, want) {
		return
	}
	if r.ContentLength > h.maxBatchBytes {
		h.fail(w, r, http.StatusRequestEntityTooLarge, "batch larger than "+strconv.FormatInt(h.maxBatchBytes, 10)+" bytes", "")
		return
	}
	if !h.acceptingNow(w, r) {
		return
	}
	h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	body, code, errText := readBody(w, r, h.maxBatchBytes)
	if code != 0 {
		h.fail(w, r, code, renameBody(errText, "batch"), "")
		return
	}
	entries, bad, code, errText := h.batchEntries(r, body, ceBatch)
	if code != 0 {
		h.fail(w, r, code, errText, "")
		return
	}
	results := make([]result, len(entries))
	var msgs []*publisher.Message
	var index []int // msgs[k] is entry index[k]
	for i, msg := range entries {
		if bad[i] != nil {
			results[i] = result{id: msg.MessageID, code: bad[i].code, text: bad[i].text}
			continue
		}
		h.startSpan(r.Context(), th, msg)
		msgs = append(msgs, msg)
		index = append(index, i)
	}
	h.onBatch(len(entries))
	if len(msgs) > 0 {
		ids := make([]string, len(msgs))
		for k, m := range msgs {
			ids[k] = m.MessageID
		}
		set := newSettlements(ids)
		deadline := time.Now().Add(h.confirmTimeout)
		giveUp := h.pub.Send(r.Context(), msgs, prefersAsync(r.Header), deadline, set.done)
		h.await(r.Context(), set, giveUp, deadline)
		for k, i := range index {
			results[i] = set.out[k]
		}
	}
	h.writeBatch(w, r, results)
}

// batchEntries decodes a batch's body into its messages, each with its own
// refusal or nil; code and errText refuse the whole batch.
func (h *handler) batchEntries(r *http.Request, body []byte, ceBatch bool) (msgs []*publisher.Message, bad []*entryError, code int, errText string) {
	if ceBatch {
		return h.cloudEventsBatch(r, body)
	}
	var env struct {
		Messages *[]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, nil, http.StatusBadRequest, "malformed batch: " + jsonErrorText(err)
	}
	if env.Messages == nil {
		return nil, nil, http.StatusBadRequest, `malformed batch: want {"messages": [message objects]}`
	}
	raws := *env.Messages
	if len(raws) > h.maxBatchMsgs {
		return nil, nil, http.StatusRequestEntityTooLarge, "batch of " + strconv.Itoa(len(raws)) + " messages, more than " + strconv.Itoa(h.maxBatchMsgs)
	}
	msgs = make([]*publisher.Message, len(raws))
	bad = make([]*entryError, len(raws))
	for i, raw := range raws {
		msg, b, err := h.decodeEntry(raw)
		if err != nil {
			return nil, nil, http.StatusBadRequest, "malformed batch: messages[" + strconv.Itoa(i) + "] is " + err.Error()
		}
		msgs[i], bad[i] = msg, b
	}
	return msgs, bad, 0, ""
}

// await waits until every message of set is settled, the deadline passes or
// ctx ends (the client went away, or a shutdown), then gives up on the rest.
func (h *handler) await(ctx context.Context, set *settlements, giveUp func(int, error) (publisher.Delivery, error), deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	var cause error = publisher.ErrConfirmTimeout
	select {
	case <-set.all:
	case <-t.C:
	case <-ctx.Done():
		cause = context.Cause(ctx)
	}
	set.close(giveUp, cause)
}

func (h *handler) writeBatch(w http.ResponseWriter, r *http.Request, results []result) {
	code := http.StatusOK
	for _, res := range results {
		switch {
		case res.code == http.StatusOK:
		case res.code == http.StatusAccepted && code == http.StatusOK:
			code = http.StatusAccepted
		case res.code != http.StatusAccepted:
			code = http.StatusMultiStatus
		}
	}
	b := make([]byte, 0, 16+len(results)*80)
	b = append(b, `{"results":[`...)
	for i, res := range results {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendResult(b, -1, res)
	}
	b = append(b, "]}\n"...)
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType[:1:1]
	hdr["X-Content-Type-Options"] = noSniff[:1:1]
	w.WriteHeader(code)
	_, _ = w.Write(b)
	if h.onResponse != nil {
		h.onResponse(code)
	}
}

// admit runs the first checks of a batch or a stream, answering the request
// when one fails: POST (405), the token (401), the Content-Type (415).
func (h *handler) admit(w http.ResponseWriter, r *http.Request, contentType string) bool {
	if r.Method != http.MethodPost {
		w.Header()["Allow"] = []string{http.MethodPost}
		h.fail(w, r, http.StatusMethodNotAllowed, "method not allowed: use POST", "")
		return false
	}
	if h.auth && !h.authorized(r) {
		w.Header()["Www-Authenticate"] = []string{"Bearer"}
		h.fail(w, r, http.StatusUnauthorized, "missing or wrong bearer token", "")
		return false
	}
	return h.contentIs(w, r, contentType)
}

// acceptingNow answers 503 (and returns false) when Config.Accepting says
// no messages can be taken now.
func (h *handler) acceptingNow(w http.ResponseWriter, r *http.Request) bool {
	if h.accepting != nil {
		if err := h.accepting(); err != nil {
			h.unavailable(w, r, err, "")
			return false
		}
	}
	return true
}

// contentIs checks that the request's Content-Type is want (parameters
// such as charset allowed) or absent; otherwise it answers 415.
func (h *handler) contentIs(w http.ResponseWriter, r *http.Request, want string) bool {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return true
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == want {
		return true
	}
	w.Header()["Accept-Post"] = []string{want}
	h.fail(w, r, http.StatusUnsupportedMediaType, "Content-Type must be "+want, "")
	return false
}

// renameBody renames the body of readBody's error to what it is here.
func renameBody(errText, what string) string {
	const body = "body "
	if len(errText) > len(body) && errText[:len(body)] == body {
		return what + " " + errText[len(body):]
	}
	return errText
}
