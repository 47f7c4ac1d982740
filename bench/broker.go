package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// purge declares the durable queue and empties it.
func (b *bench) purge() error {
	conn, err := amqp.Dial(b.cfg.amqpURL)
	if err != nil {
		return fmt.Errorf("dial %s: %w", redact(b.cfg.amqpURL), err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(b.cfg.queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", b.cfg.queue, err)
	}
	if _, err := ch.QueuePurge(b.cfg.queue, false); err != nil {
		return fmt.Errorf("purge queue %s: %w", b.cfg.queue, err)
	}
	return nil
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// rabbitmqctl runs rabbitmqctl -n NODE args... with a bound.
func (b *bench) rabbitmqctl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.cfg.rabbitmqctl, append([]string{"-n", b.cfg.node}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -n %s %s: %w: %s", b.cfg.rabbitmqctl, b.cfg.node, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// queueDepth returns the number of messages in the benchmark queue.
func (b *bench) queueDepth() (int, error) {
	conn, err := amqp.Dial(b.cfg.amqpURL)
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", redact(b.cfg.amqpURL), err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	q, err := ch.QueueDeclarePassive(b.cfg.queue, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	return q.Messages, nil
}

// readBrokerPid reads -broker-pid-file, if given, for the broker's CPU.
func (b *bench) readBrokerPid() {
	if b.cfg.brokerPidFile == "" {
		return
	}
	if p, err := os.ReadFile(b.cfg.brokerPidFile); err == nil {
		b.brokerPid = strings.TrimSpace(string(p))
	} else {
		b.note("broker CPU not reported: %v", err)
	}
}
