package publisher_test

import (
	"context"
	"log/slog"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/publisher"
)

// BenchmarkPublish compares, in one run and at the same concurrency (64
// goroutines on 2 cores), Publisher.Publish with raw amqp091-go where each
// goroutine publishes on its own confirm-mode channel and waits for its own
// confirm (what most application code does). 256-byte persistent messages to a
// durable queue. Compare the ns/op of the two sub-benchmarks (msgs/s =
// 1e9/ns_op); `make bench` (pubbench, in bench/) prints the ratio for the whole service.
func BenchmarkPublish(b *testing.B) {
	url := brokertest.SharedURL(b)
	q := brokertest.TempQueue(b, url, "pubbench")
	body := make([]byte, 256)
	const parallelism = 32 // x GOMAXPROCS(2) = 64 goroutines

	b.Run("publisher", func(b *testing.B) {
		pub, err := publisher.New(publisher.Config{URLs: []string{url}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- pub.Serve(ctx) }()
		defer func() { cancel(); <-done; pub.Terminated(nil) }()
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m := &publisher.Message{RoutingKey: q, Body: body, Persistent: true, Mandatory: true}
				if err := pub.Publish(context.Background(), m); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("raw-amqp091-confirm-each", func(b *testing.B) {
		conn, err := amqp.Dial(url)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ch, err := conn.Channel()
			if err != nil {
				b.Error(err)
				return
			}
			defer ch.Close()
			if err := ch.Confirm(false); err != nil {
				b.Error(err)
				return
			}
			for pb.Next() {
				dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", q, true, false,
					amqp.Publishing{Body: body, DeliveryMode: amqp.Persistent, MessageId: publisher.NewMessageID()})
				if err != nil {
					b.Error(err)
					return
				}
				if ok, err := dc.WaitContext(context.Background()); err != nil || !ok {
					b.Errorf("confirm: ok=%v err=%v", ok, err)
					return
				}
			}
		})
	})
}
