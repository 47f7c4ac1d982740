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

	"github.com/publisher-dev/publisher/apps"
	"github.com/publisher-dev/publisher/cloudevents"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/relay"
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
	// replayed: the answer of an earlier request with the same idempotency
	// key, given again ("replayed": true in the result).
	replayed bool
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
func resultOf(id string, d relay.Delivery, err error) result {
	if err == nil {
		if d == relay.Spooled {
			return result{id: id, code: http.StatusAccepted}
		}
		return result{id: id, code: http.StatusOK}
	}
	var p *problem
	if !errors.As(err, &p) {
		p = answerFor(err)
	}
	return result{id: id, code: p.code, text: p.text}
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
	if r.replayed {
		b = append(b, `,"replayed":true`...)
	}
	return append(b, '}')
}

// settlements collects the outcomes of messages handed to Sender.Send:
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

func (s *settlements) done(i int, d relay.Delivery, err error) {
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
func (s *settlements) close(giveUp func(int, error) (relay.Delivery, error), cause error) {
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
// PUBLISHER_MAX_BATCH_BYTES (413), or not accepted now (503), or when the
// app's bucket does not hold a token for every message that would be
// published (429 with Retry-After; 413 when they are more than its burst):
// a batch is taken from the bucket all or none, so a 429 means nothing was
// published and the same batch can be sent again. A message object with a
// bad field gets its own 400 (or the 403 of the allow-list or of the app's
// scope, or the 413 of the single publish) and costs nothing else. No ordering or atomicity across entries,
// but the messages to one exchange and routing key are published in request
// order.
func (h *Handler) serveBatch(w http.ResponseWriter, r *http.Request, th tracing.Headers) {
	ceBatch := cloudevents.ContentMode(r.Header.Get("Content-Type")) == cloudevents.ModeBatch
	want := "application/json"
	if ceBatch {
		want = cloudevents.MediaTypeBatch
	}
	app, err := h.admitBatch(w, r, want)
	if err != nil {
		h.fail(w, err, "")
		return
	}
	if p := refuseRequestKey(r); p != nil {
		h.fail(w, p, "")
		return
	}
	if r.ContentLength > h.maxBatchBytes {
		h.fail(w, refuse(http.StatusRequestEntityTooLarge, "batch larger than "+strconv.FormatInt(h.maxBatchBytes, 10)+" bytes"), "")
		return
	}
	if err := h.acceptingNow(); err != nil {
		h.fail(w, err, "")
		return
	}
	h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	body, err := readBody(w, r, h.maxBatchBytes)
	if err != nil {
		h.fail(w, renameBody(err, "batch"), "")
		return
	}
	entries, idems, bad, err := h.batchEntries(r, body, ceBatch)
	if err != nil {
		h.fail(w, err, "")
		return
	}
	h.onBatch(len(entries))
	scopeEntries(app, entries, bad)
	if p := h.rateEntries(app, bad); p != nil {
		code := h.fail(w, p, "")
		for range entries {
			h.onMessage(app.Name(), code)
		}
		return
	}
	results := make([]result, len(entries))
	var msgs []*publisher.Message
	var index []int // msgs[k] is entry index[k]
	kb := newKeyedBatch(h, app)
	for i, msg := range entries {
		if bad[i] != nil {
			results[i] = resultOf(msg.MessageID, 0, bad[i])
			continue
		}
		if idems != nil && idems[i].key != "" {
			if res, done := kb.begin(i, msg, idems[i], len(msgs)); done {
				results[i] = res
				continue
			}
		}
		h.startSpan(r.Context(), th, msg, app.Name())
		msgs = append(msgs, msg)
		index = append(index, i)
	}
	if len(msgs) > 0 {
		ids := make([]string, len(msgs))
		for k, m := range msgs {
			ids[k] = m.MessageID
		}
		set := newSettlements(ids)
		deadline := time.Now().Add(h.confirmTimeout)
		opts := relay.SendOptions{Async: prefersAsync(r.Header), Deadline: deadline, Keys: kb.refs}
		giveUp := h.send.Send(r.Context(), msgs, opts, kb.done(set.done))
		h.await(r.Context(), set, kb.giveUp(giveUp), deadline)
		for k, i := range index {
			results[i] = set.out[k]
		}
	}
	kb.repeats(results)
	if len(results) > 0 && kb.allReplayed(results) {
		w.Header()[replayedHeader] = replayedTrue[:1:1]
	}
	h.writeBatch(w, results)
	for _, res := range results {
		h.onMessage(app.Name(), res.code)
	}
}

// batchEntries decodes a batch's body into its messages, each with its own
// refusal or nil, and its idempotency key (idems is nil for a CloudEvents
// batch, whose events have none); an error refuses the whole batch.
func (h *Handler) batchEntries(r *http.Request, body []byte, ceBatch bool) (msgs []*publisher.Message, idems []entryIdem, bad []*problem, err error) {
	if ceBatch {
		msgs, bad, err = h.cloudEventsBatch(r, body)
		return msgs, nil, bad, err
	}
	raws, err := splitBatch(body)
	if err != nil {
		return nil, nil, nil, badRequest("malformed batch: " + batchErrorText(body, err))
	}
	if raws == nil {
		return nil, nil, nil, badRequest(`malformed batch: want {"messages": [message objects]}`)
	}
	if len(raws) > h.maxBatchMsgs {
		return nil, nil, nil, refuse(http.StatusRequestEntityTooLarge, "batch of "+strconv.Itoa(len(raws))+" messages, more than "+strconv.Itoa(h.maxBatchMsgs))
	}
	msgs = make([]*publisher.Message, len(raws))
	idems = make([]entryIdem, len(raws))
	bad = make([]*problem, len(raws))
	for i, raw := range raws {
		msg, idem, b, err := h.decodeEntry(raw)
		if err != nil {
			return nil, nil, nil, badRequest("malformed batch: messages[" + strconv.Itoa(i) + "] is " + err.Error())
		}
		msgs[i], idems[i], bad[i] = msg, idem, b
	}
	return msgs, idems, bad, nil
}

// batchErrorText words splitBatch's refusal of body (err) as
// json.Unmarshal worded it, as entryErrorText does for a message object; a
// "messages" given twice, which encoding/json accepted, is worded by err.
func batchErrorText(body []byte, err error) string {
	if errors.Is(err, errDuplicateMessages) {
		return err.Error()
	}
	var env struct {
		Messages *[]json.RawMessage `json:"messages"`
	}
	if v1err := json.Unmarshal(body, &env); v1err != nil {
		return jsonErrorText(v1err)
	}
	if env.Messages == nil {
		return `want {"messages": [message objects]}`
	}
	return strictErrorText(err)
}

// await waits until every message of set is settled, the deadline passes or
// ctx ends (the client went away, or a shutdown), then gives up on the rest.
func (h *Handler) await(ctx context.Context, set *settlements, giveUp func(int, error) (relay.Delivery, error), deadline time.Time) {
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

func (h *Handler) writeBatch(w http.ResponseWriter, results []result) {
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
	h.onResponse(code)
}

// admitBatch runs the first checks of a batch or a stream: POST (405), the
// token (401: the request's app), the Content-Type (415).
func (h *Handler) admitBatch(w http.ResponseWriter, r *http.Request, contentType string) (*apps.App, error) {
	app, err := h.admitMethodAndToken(w, r)
	if err != nil {
		return nil, err
	}
	return app, contentIs(w, r, contentType)
}

// contentIs checks that the request's Content-Type is want (parameters
// such as charset allowed) or absent; otherwise the answer is 415, with
// Accept-Post.
func contentIs(w http.ResponseWriter, r *http.Request, want string) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == want {
		return nil
	}
	w.Header()["Accept-Post"] = []string{want}
	return refuse(http.StatusUnsupportedMediaType, "Content-Type must be "+want)
}

// renameBody renames the body of readBody's refusal to what it is here
// ("batch larger than ..." rather than "body larger than ...").
func renameBody(err error, what string) error {
	var p *problem
	const body = "body "
	if errors.As(err, &p) && len(p.text) > len(body) && p.text[:len(body)] == body {
		return &problem{code: p.code, text: what + " " + p.text[len(body):], retry: p.retry}
	}
	return err
}
