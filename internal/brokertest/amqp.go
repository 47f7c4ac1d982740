package brokertest

import (
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultSharedURL is the machine's shared broker.
const DefaultSharedURL = "amqp://guest:guest@127.0.0.1:5672/"

// SharedURL returns the machine's broker URL: $PUBLISHER_TEST_AMQP_URL or
// DefaultSharedURL. It checks that the broker accepts a connection; if not,
// the test fails under CI and is skipped otherwise.
func SharedURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("PUBLISHER_TEST_AMQP_URL")
	if u == "" {
		u = DefaultSharedURL
	}
	c, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		if inCI() {
			t.Fatalf("brokertest: shared broker %s not reachable: %v", redact(u), err)
		}
		t.Skipf("brokertest: shared broker %s not reachable: %v", redact(u), err)
	}
	c.Close()
	return u
}

func redact(u string) string {
	if pu, err := url.Parse(u); err == nil {
		return pu.Redacted()
	}
	return "(unparsable URL)"
}

// Channel opens a connection and a channel to the broker at amqpURL, both
// closed at the end of the test.
func Channel(t testing.TB, amqpURL string) *amqp.Channel {
	t.Helper()
	c, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("brokertest: dial: %v", err)
	}
	ch, err := c.Channel()
	if err != nil {
		c.Close()
		t.Fatalf("brokertest: channel: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return ch
}

// DeclareQueue declares a durable classic queue on the broker at url and
// deletes it, with its messages, at the end of the test: the shared broker
// outlives every test run and must not collect their queues.
func DeclareQueue(t testing.TB, amqpURL, queue string) {
	t.Helper()
	DeclareQueueArgs(t, amqpURL, queue, nil)
}

// TempQueue declares a durable classic queue named prefix-<nanoseconds>, so
// runs never share one, deletes it at the end of the test (see DeclareQueue)
// and returns its name.
func TempQueue(t testing.TB, amqpURL, prefix string) string {
	t.Helper()
	q := prefix + "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	DeclareQueueArgs(t, amqpURL, q, nil)
	return q
}

// DeclareQueueArgs is DeclareQueue with queue arguments (x-queue-type,
// x-max-length, ...).
func DeclareQueueArgs(t testing.TB, amqpURL, queue string, args amqp.Table) {
	t.Helper()
	ch := Channel(t, amqpURL)
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		t.Fatalf("brokertest: declare %q: %v", queue, err)
	}
	ch.Close()
	t.Cleanup(func() {
		if err := deleteQueue(amqpURL, queue); err != nil {
			t.Errorf("brokertest: delete %q: %v", queue, err)
		}
	})
}

// deleteQueue deletes queue on a connection of its own (the test's may be
// closed by now). A queue already gone (a private node stopped) is no error.
func deleteQueue(amqpURL, queue string) error {
	c, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return nil // the broker is gone with its queue (a private node stopped)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	_, err = ch.QueueDelete(queue, false, false, false)
	return err
}

// Purge removes all ready messages from queue and returns how many.
func Purge(t testing.TB, amqpURL, queue string) int {
	t.Helper()
	ch := Channel(t, amqpURL)
	n, err := ch.QueuePurge(queue, false)
	if err != nil {
		t.Fatalf("brokertest: purge %q: %v", queue, err)
	}
	ch.Close()
	return n
}

// Drain removes every ready message from queue and returns message-id ->
// count (messages without a message-id count under ""). It consumes with
// automatic acks (far faster than basic.get for the 100,000 messages of a
// stream test) until it has received as many messages as the queue held
// when it started and nothing more arrived for drainIdle.
func Drain(t testing.TB, amqpURL, queue string) map[string]int {
	t.Helper()
	ch := Channel(t, amqpURL)
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("brokertest: drain %q: %v", queue, err)
	}
	if err := ch.Qos(1000, 0, false); err != nil {
		t.Fatalf("brokertest: drain %q: %v", queue, err)
	}
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("brokertest: drain %q: %v", queue, err)
	}
	got := map[string]int{}
	n := 0
	idle := time.NewTimer(drainStall)
	defer idle.Stop()
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				t.Fatalf("brokertest: drain %q: the channel closed after %d messages", queue, n)
			}
			got[d.MessageId]++
			n++
			if n < q.Messages {
				idle.Reset(drainStall)
			} else {
				idle.Reset(drainIdle)
			}
		case <-idle.C:
			if n < q.Messages {
				t.Fatalf("brokertest: drain %q: %d of %d messages received, then none for %v", queue, n, q.Messages, drainStall)
			}
			return got
		}
	}
}

// drainIdle is how long Drain waits for one more message once it has the
// count the queue reported: consumers get ready messages within
// milliseconds on loopback. Below that count it waits up to drainStall for
// the next one: a broker busy paging a long queue from disk, on a machine
// shared with other work, pauses deliveries for seconds (seen: 300 ms was
// too short under load, with 130,000 messages queued).
const (
	drainIdle  = 300 * time.Millisecond
	drainStall = 30 * time.Second
)

// DeclareQueue declares a durable classic queue on the node.
func (n *Node) DeclareQueue(t testing.TB, queue string) { t.Helper(); DeclareQueue(t, n.URL(), queue) }

// Purge empties queue on the node and returns how many messages it removed.
func (n *Node) Purge(t testing.TB, queue string) int { t.Helper(); return Purge(t, n.URL(), queue) }

// Drain empties queue on the node; see the package-level Drain.
func (n *Node) Drain(t testing.TB, queue string) map[string]int {
	t.Helper()
	return Drain(t, n.URL(), queue)
}

// CheckDelivered drains queue and fails the test when a message whose id is
// in acked (acknowledged to its sender) is missing. With attempts > 0 it also
// fails when fewer than 99% of the attempts were acknowledged. Duplicates are
// allowed (at-least-once) and reported; it returns their number.
func CheckDelivered(t testing.TB, amqpURL, queue string, acked []string, attempts int) (duplicates int) {
	t.Helper()
	got := Drain(t, amqpURL, queue)
	missing := 0
	for _, id := range acked {
		if got[id] == 0 {
			missing++
		}
	}
	for _, c := range got {
		duplicates += c - 1
	}
	t.Logf("%d acknowledged of %d attempts; queue holds %d distinct, %d duplicates (at-least-once)",
		len(acked), attempts, len(got), duplicates)
	if len(acked) == 0 {
		t.Fatal("brokertest: no message was acknowledged")
	}
	if missing > 0 {
		t.Fatalf("brokertest: %d acknowledged messages are missing from %s", missing, queue)
	}
	if attempts > 0 && float64(len(acked)) < 0.99*float64(attempts) {
		t.Fatalf("brokertest: %d of %d attempts acknowledged, want >= 99%%", len(acked), attempts)
	}
	return duplicates
}
