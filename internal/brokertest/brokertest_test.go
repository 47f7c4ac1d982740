package brokertest_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/brokertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func dial(t *testing.T, url string) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func channel(t *testing.T, c *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// publishConfirmed publishes a persistent message and waits for its confirm.
func publishConfirmed(t *testing.T, ch *amqp.Channel, queue, id string) {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
		MessageId: id, DeliveryMode: amqp.Persistent, Body: []byte("body " + id),
	})
	if err != nil {
		t.Fatal(err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil || !ok {
		t.Fatalf("confirm for %s: ok=%v err=%v", id, ok, err)
	}
}

func TestNode(t *testing.T) {
	t.Parallel() // with TestCluster: node boots are mostly waiting
	n := brokertest.Start(t, brokertest.Options{Management: true})
	t.Logf("node %s amqp=%s mgmt=%s dir=%s", n.Name, n.Addr(), n.MgmtURL(), n.Dir)

	t.Run("PublishConsume", func(t *testing.T) {
		n.DeclareQueue(t, "bt-pubsub")
		c := dial(t, n.URL())
		ch := channel(t, c)
		publishConfirmed(t, ch, "bt-pubsub", "m1")
		msgs, err := ch.Consume("bt-pubsub", "", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-msgs:
			if d.MessageId != "m1" || string(d.Body) != "body m1" {
				t.Fatalf("got %q %q", d.MessageId, d.Body)
			}
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery")
		}
		publishConfirmed(t, channel(t, c), "bt-purge", "x") // unroutable (no queue): mandatory returns, still confirmed
		n.DeclareQueue(t, "bt-purge")
		publishConfirmed(t, channel(t, c), "bt-purge", "x")
		if got := n.Purge(t, "bt-purge"); got != 1 {
			t.Fatalf("Purge = %d, want 1", got)
		}
	})

	t.Run("Management", func(t *testing.T) {
		client := &http.Client{Timeout: 5 * time.Second}
		defer client.CloseIdleConnections()
		req, _ := http.NewRequest("GET", n.MgmtURL()+"api/overview", nil)
		req.SetBasicAuth("guest", "guest")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET api/overview: %s", resp.Status)
		}
	})

	t.Run("MemoryAlarm", func(t *testing.T) {
		c := dial(t, n.URL())
		blocked := c.NotifyBlocked(make(chan amqp.Blocking, 4))
		ch := channel(t, c)
		n.DeclareQueue(t, "bt-alarm")
		t.Cleanup(func() { n.SetMemoryAlarm(false) })
		if err := n.SetMemoryAlarm(true); err != nil {
			t.Fatal(err)
		}
		if err := ch.Publish("", "bt-alarm", false, false, amqp.Publishing{Body: []byte("blocked?")}); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-blocked:
			if !b.Active {
				t.Fatalf("first blocking notification: %+v, want Active", b)
			}
			t.Logf("blocked: %+v", b)
		case <-time.After(20 * time.Second):
			t.Fatal("no connection.blocked after memory alarm")
		}
		if err := n.SetMemoryAlarm(false); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-blocked:
			if b.Active {
				t.Fatalf("notification after clearing alarm: %+v, want !Active", b)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no connection.unblocked after clearing memory alarm")
		}
		// The message published while blocked is delivered afterwards.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if got := n.Drain(t, "bt-alarm"); got[""] == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("message published during alarm never arrived")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("CloseAllConnections", func(t *testing.T) {
		c := dial(t, n.URL())
		closed := c.NotifyClose(make(chan *amqp.Error, 1))
		if err := n.CloseAllConnections("brokertest says bye"); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-closed:
			if e == nil || e.Code != amqp.ConnectionForced {
				t.Fatalf("close error %v, want connection-forced", e)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("connection not closed")
		}
	})

	t.Run("StopAppStartApp", func(t *testing.T) {
		if err := n.StopApp(); err != nil {
			t.Fatal(err)
		}
		if c, err := amqp.Dial(n.URL()); err == nil {
			c.Close()
			t.Fatal("dial succeeded after StopApp")
		}
		if err := n.StartApp(); err != nil {
			t.Fatal(err)
		}
		dial(t, n.URL())
	})

	t.Run("StopRestart", func(t *testing.T) {
		n.DeclareQueue(t, "bt-durable")
		c := dial(t, n.URL())
		publishConfirmed(t, channel(t, c), "bt-durable", "persisted-1")
		publishConfirmed(t, channel(t, c), "bt-durable", "persisted-2")
		c.Close()

		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		if c, err := amqp.Dial(n.URL()); err == nil {
			c.Close()
			t.Fatal("dial succeeded after Stop")
		}
		// A failed test's log dump ends where the stop began: the markers
		// match what this RabbitMQ logs.
		if tail := n.LogTailBeforeStop(200); !strings.HasPrefix(tail, "--- tail, before its last stop,") ||
			strings.Contains(tail, "Halting Erlang VM") || !strings.Contains(n.LogTail(200), "Halting Erlang VM") {
			t.Errorf("the log before the stop:\n%s", tail)
		}
		if err := n.Restart(); err != nil {
			t.Fatal(err)
		}
		got := n.Drain(t, "bt-durable")
		want := map[string]int{"persisted-1": 1, "persisted-2": 1}
		if len(got) != len(want) || got["persisted-1"] != 1 || got["persisted-2"] != 1 {
			t.Fatalf("after restart drained %v, want %v", got, want)
		}
	})
}

func TestSharedURL(t *testing.T) {
	u := brokertest.SharedURL(t)
	c, err := amqp.Dial(u)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	t.Parallel()
	nodes := brokertest.StartCluster(t, 3, brokertest.Options{})
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	for _, n := range nodes {
		running, err := n.RunningNodes()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(running)
		want := slices.Clone(names)
		slices.Sort(want)
		if !slices.Equal(running, want) {
			t.Fatalf("%s sees running nodes %v, want %v", n.Name, running, want)
		}
	}
	// A queue declared on one node is reachable through every other.
	nodes[0].DeclareQueue(t, "bt-cluster")
	c := dial(t, nodes[2].URL())
	publishConfirmed(t, channel(t, c), "bt-cluster", "via-node-3")
	if got := nodes[1].Drain(t, "bt-cluster"); got["via-node-3"] != 1 {
		t.Fatalf("drained via node 2: %v", got)
	}
}
