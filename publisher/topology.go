package publisher

import (
	"fmt"
	"os"

	amqp "github.com/rabbitmq/amqp091-go"
	"sigs.k8s.io/yaml"
)

// Topology is what the publisher declares on every (re)connect, so a broker
// that lost its definitions (a new node, a reset) gets them back before the
// first publish. Declarations are idempotent; one that conflicts with an
// existing entity (other type or arguments) fails the connect loudly.
type Topology struct {
	Exchanges []Exchange `json:"exchanges"`
	Queues    []Queue    `json:"queues"`
	Bindings  []Binding  `json:"bindings"`
}

// Exchange is an exchange to declare. Durable defaults to true.
type Exchange struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"` // default "direct"
	Durable    *bool          `json:"durable,omitempty"`
	AutoDelete bool           `json:"auto_delete,omitempty"`
	Internal   bool           `json:"internal,omitempty"`
	Arguments  map[string]any `json:"arguments,omitempty"`
}

// Queue is a queue to declare. Durable defaults to true; a quorum queue is
// one with arguments {"x-queue-type": "quorum"}.
type Queue struct {
	Name       string         `json:"name"`
	Durable    *bool          `json:"durable,omitempty"`
	AutoDelete bool           `json:"auto_delete,omitempty"`
	Exclusive  bool           `json:"exclusive,omitempty"`
	Arguments  map[string]any `json:"arguments,omitempty"`
}

// Binding binds queue Destination to exchange Source with RoutingKey.
type Binding struct {
	Source      string         `json:"source"`
	Destination string         `json:"destination"`
	RoutingKey  string         `json:"routing_key"`
	Arguments   map[string]any `json:"arguments,omitempty"`
}

// LoadTopology reads a topology file in JSON or YAML.
func LoadTopology(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("publisher: read topology: %w", err)
	}
	var t Topology
	if err := yaml.UnmarshalStrict(b, &t); err != nil {
		return nil, fmt.Errorf("publisher: parse topology %s: %w", path, err)
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("publisher: topology %s: %w", path, err)
	}
	return &t, nil
}

// Validate checks what can be checked without a broker.
func (t *Topology) Validate() error {
	for i, e := range t.Exchanges {
		if e.Name == "" {
			return fmt.Errorf("exchanges[%d]: name is empty", i)
		}
	}
	for i, q := range t.Queues {
		if q.Name == "" {
			return fmt.Errorf("queues[%d]: name is empty", i)
		}
	}
	for i, b := range t.Bindings {
		if b.Source == "" || b.Destination == "" {
			return fmt.Errorf("bindings[%d]: source and destination are required", i)
		}
	}
	return nil
}

func durable(b *bool) bool { return b == nil || *b }

// declareTopology declares t on a channel of its own, closed afterwards.
func declareTopology(conn Conn, t *Topology) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, e := range t.Exchanges {
		kind := e.Type
		if kind == "" {
			kind = amqp.ExchangeDirect
		}
		if err := ch.ExchangeDeclare(e.Name, kind, durable(e.Durable), e.AutoDelete, e.Internal, false, tableOf(e.Arguments)); err != nil {
			return fmt.Errorf("exchange %q: %w", e.Name, err)
		}
	}
	for _, q := range t.Queues {
		if _, err := ch.QueueDeclare(q.Name, durable(q.Durable), q.AutoDelete, q.Exclusive, false, tableOf(q.Arguments)); err != nil {
			return fmt.Errorf("queue %q: %w", q.Name, err)
		}
	}
	for _, b := range t.Bindings {
		if err := ch.QueueBind(b.Destination, b.RoutingKey, b.Source, false, tableOf(b.Arguments)); err != nil {
			return fmt.Errorf("binding %s->%s: %w", b.Source, b.Destination, err)
		}
	}
	return nil
}

// tableOf converts decoded JSON values to AMQP table values: JSON numbers
// arrive as float64, which RabbitMQ rejects for integer arguments such as
// x-max-length, so whole numbers become int64.
func tableOf(m map[string]any) amqp.Table {
	if len(m) == 0 {
		return nil
	}
	t := make(amqp.Table, len(m))
	for k, v := range m {
		t[k] = amqpValue(v)
	}
	return t
}

func amqpValue(v any) any {
	switch x := v.(type) {
	case float64:
		if x == float64(int64(x)) {
			return int64(x)
		}
		return x
	case map[string]any:
		return tableOf(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = amqpValue(e)
		}
		return out
	default:
		return v
	}
}
