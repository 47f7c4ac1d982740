package apps

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/internal/brokertest"
)

// The cases of RabbitMQ's topic exchange tutorial and the edges of its
// word splitting (the empty key has no words; "a." has two).
func TestTopicPatterns(t *testing.T) {
	cases := []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"*.orange.*", []string{"quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.", ".orange."}, []string{"quick.orange", "quick.orange.male.rabbit", "orange", "lazy.brown.fox"}},
		{"*.*.rabbit", []string{"quick.orange.rabbit", "lazy.pink.rabbit", "..rabbit"}, []string{"quick.rabbit", "a.b.c.rabbit"}},
		{"lazy.#", []string{"lazy", "lazy.orange.elephant", "lazy.pink.rabbit", "lazy.orange.new.rabbit", "lazy."}, []string{"quick.lazy", "lazyx", ""}},
		{"#", []string{"", "a", "a.b.c", ".", "a..b"}, nil},
		{"*", []string{"a", "orders"}, []string{"", "a.b", "."}},
		{"", []string{""}, []string{"a", "."}},
		{"orders.created", []string{"orders.created"}, []string{"orders", "orders.created.x", "orders.createdx", "Orders.created"}},
		{"orders.#.eu", []string{"orders.eu", "orders.x.eu", "orders.x.y.eu"}, []string{"orders.eu.x", "orders", "eu"}},
		{"#.eu", []string{"eu", "a.eu", "a.b.eu"}, []string{"eu.a", "aeu"}},
		{"#.#", []string{"", "a", "a.b"}, nil},
		{"*.#", []string{"a", "a.b", "a.b.c"}, []string{""}},
		{"#.*", []string{"a", "a.b"}, []string{""}},
		{"a.*.#.c", []string{"a.b.c", "a.b.x.c", "a.b.x.y.c"}, []string{"a.c", "a.b", "a.b.c.d"}},
		{"a*", []string{"a*"}, []string{"ab", "a"}}, // a wildcard only as a whole word
	}
	for _, c := range cases {
		p := parsePattern(c.pattern)
		for _, k := range c.match {
			if !p.match(k) {
				t.Errorf("pattern %q does not match %q, want a match", c.pattern, k)
			}
		}
		for _, k := range c.miss {
			if p.match(k) {
				t.Errorf("pattern %q matches %q, want none", c.pattern, k)
			}
		}
	}
}

func TestTopicMatchAllocatesNothing(t *testing.T) {
	p := parsePattern("orders.#.eu.*")
	if n := testing.AllocsPerRun(100, func() { p.match("orders.a.b.c.eu.x") }); n != 0 {
		t.Errorf("match allocates %v times, want 0", n)
	}
}

// The longest pattern and key (255 bytes: 128 words) match without
// overrunning the fixed state arrays.
func TestTopicLongest(t *testing.T) {
	words := strings.Repeat("a.", 127) + "a" // 255 bytes, 128 words
	if len(words) != 255 {
		t.Fatal(len(words))
	}
	for _, pat := range []string{words, strings.Repeat("#.", 127) + "#", strings.Repeat("*.", 127) + "*"} {
		if !parsePattern(pat).match(words) {
			t.Errorf("a 128-word pattern does not match a 128-word key")
		}
	}
}

// topicSeed, when set (an integer), replaces the clock as the seed of
// TestTopicMatchesTheBroker's patterns and keys.
const topicSeedVar = "APPS_TOPIC_SEED"

// The matcher routes as a real RabbitMQ topic exchange does: patterns bound
// from exclusive queues to a topic exchange of this test, keys published
// with confirms, and each queue's messages read back; random patterns and
// keys over a small alphabet (seed logged; replay with APPS_TOPIC_SEED=N)
// and the edges of the word splitting.
func TestTopicMatchesTheBroker(t *testing.T) {
	url := brokertest.SharedURL(t)
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv(topicSeedVar); v != "" {
		var err error
		if s, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s: %v", topicSeedVar, err)
		}
	}
	t.Logf("seed %d (replay: %s=%d go test ./apps -run TestTopicMatchesTheBroker)", s, topicSeedVar, s)
	rng := rand.New(rand.NewPCG(s, s))

	words := []string{"a", "b", "", "*", "#"}
	randomOf := func(n int, wild bool) string {
		w := make([]string, n)
		for i := range w {
			pool := words
			if !wild {
				pool = words[:3]
			}
			w[i] = pool[rng.IntN(len(pool))]
		}
		return strings.Join(w, ".")
	}
	patterns := []string{"", "#", "*", "#.#", "*.#", "#.*", "a.#", "#.a", "a.*", "*.a", "a.#.b", "a..b", "a.", ".a", "."}
	keys := []string{"", ".", "..", "a", "b", "a.b", "a..b", "a.", ".a", "a.b.a", "a.a.b.b"}
	for range 25 {
		patterns = append(patterns, randomOf(1+rng.IntN(4), true))
	}
	for range 50 {
		keys = append(keys, randomOf(rng.IntN(5), false))
	}

	ch := brokertest.Channel(t, url)
	ex := "apps-topic-test-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := ch.ExchangeDeclare(ex, amqp.ExchangeTopic, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	queues := make([]string, len(patterns))
	for i, p := range patterns {
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(q.Name, p, ex, false, nil); err != nil {
			t.Fatal(err)
		}
		queues[i] = q.Name
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, len(keys)))
	for i, k := range keys {
		if err := ch.Publish(ex, k, false, false, amqp.Publishing{MessageId: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range keys {
		select {
		case c := <-confirms:
			if !c.Ack {
				t.Fatalf("publish %d nacked", c.DeliveryTag)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no confirm within 30s")
		}
	}
	checked := 0
	for i, p := range patterns {
		routed := map[string]bool{}
		for {
			d, ok, err := ch.Get(queues[i], true)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			n, _ := strconv.Atoi(d.MessageId)
			routed[keys[n]] = true
		}
		pat := parsePattern(p)
		for _, k := range keys {
			if got := pat.match(k); got != routed[k] {
				t.Errorf("pattern %q, key %q: match says %v, the broker routed: %v", p, k, got, routed[k])
			}
			checked++
		}
	}
	t.Logf("%d patterns × %d keys (%d pairs) compared with the broker's routing", len(patterns), len(keys), checked)
}
