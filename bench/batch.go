package main

import (
	"context"
	"encoding/json"
	"net/http"
)

// messageObject is the message object of modes batch and stream: the
// default exchange, the queue as routing key, the body as a JSON string.
// It names no message_id, so the service generates one as it does for mode
// service's requests.
func (b *bench) messageObject() ([]byte, error) {
	e := struct {
		Exchange   string `json:"exchange"`
		RoutingKey string `json:"routing_key"`
		Body       string `json:"body"`
		Persistent *bool  `json:"persistent,omitempty"`
	}{Exchange: "amq.default", RoutingKey: b.cfg.queue, Body: string(b.body)}
	if !b.cfg.persistent {
		f := false
		e.Persistent = &f
	}
	return json.Marshal(e)
}

// batchBody is mode batch's request body: {"messages": [n message objects]}.
func batchBody(obj []byte, n int) []byte {
	body := make([]byte, 0, len(`{"messages":[]}`)+n*(len(obj)+1))
	body = append(body, `{"messages":[`...)
	for i := range n {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, obj...)
	}
	return append(body, "]}"...)
}

// batchAnswerLimit bounds the answer to a batch of n messages: a result is
// about 80 bytes (a generated message id), at most ~300 with an error text.
func batchAnswerLimit(n int) int { return defaultMaxAnswer + n*512 }

// runBatch is mode (f): -batch-c workers, each on a lean keep-alive
// connection of its own, posting the same /v1/batch request of -batch-size
// messages back to back. A message counts when its result has status 200;
// one latency sample per request (sent to answer read).
func (b *bench) runBatch(ctx context.Context, w window) (merged, error) {
	obj, err := b.messageObject()
	if err != nil {
		return merged{}, err
	}
	n := b.cfg.batchSize
	u := "http://" + b.svc.proc.APIAddr() + "/v1/batch"
	h := http.Header{"Content-Type": {"application/json"}}
	body := batchBody(obj, n)
	conns := make([]*leanConn, b.cfg.batchConc)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	for i := range conns {
		if conns[i], err = newLeanConn(u, h, body); err != nil {
			return merged{}, err
		}
		conns[i].maxAnswer = batchAnswerLimit(n)
	}
	return runClosedLoopN(ctx, w, b.cfg.batchConc, opTimeout, func(ctx context.Context, i int) (int, int, error) {
		code, answer, err := conns[i].do(ctx)
		if err != nil {
			return 0, n, err
		}
		return countBatch(code, answer, n)
	}), nil
}
