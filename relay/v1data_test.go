package relay

import (
	"time"

	"github.com/publisher-dev/publisher/publisher"
)

// v1Messages are the messages in testdata/spool-v1, a spool directory
// written by the code of before the record format was made explicit (a
// record was the JSON of an envelope holding a publisher.Message without
// struct tags): every field set at least once, binary bodies, headers of
// each JSON type.
func v1Messages() []*publisher.Message {
	ts := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	return []*publisher.Message{
		{Exchange: "", RoutingKey: "orders", Body: []byte(`{"order":42}`), MessageID: "v1-plain",
			ContentType: "application/json", Persistent: true, Mandatory: true, Timestamp: ts},
		{Exchange: "events", RoutingKey: "orders.created", Body: []byte{0, 1, 2, 0xff, 0xfe}, MessageID: "v1-all-fields",
			ContentType: "application/octet-stream", ContentEncoding: "gzip", CorrelationID: "corr-1",
			ReplyTo: "replies", Type: "order.created", Expiration: "60000", Priority: 7,
			Persistent: false, Mandatory: false,
			Headers:   map[string]any{"tenant": "acme", "attempt": float64(3), "urgent": true},
			Timestamp: ts.Add(time.Second)},
		{Exchange: "amq.direct", RoutingKey: "", Body: nil, MessageID: "v1-empty-body", Persistent: true, Mandatory: true, Timestamp: ts.Add(2 * time.Second)},
		{Exchange: "events", RoutingKey: "big", Body: make([]byte, 700), MessageID: "v1-second-segment", Persistent: true, Timestamp: ts.Add(3 * time.Second)},
		{Exchange: "events", RoutingKey: "unicode", Body: []byte("héllo wörld ✓"), MessageID: "v1-ünïcode", Persistent: true, Mandatory: true, Timestamp: ts.Add(4 * time.Second)},
	}
}
