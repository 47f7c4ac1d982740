package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/publisher"
)

// Config is the whole configuration, read from PUBLISHER_* variables.
type Config struct {
	AMQPURLs           []string      `envconfig:"AMQP_URLS" default:"amqp://guest:guest@localhost:5672/" desc:"comma-separated broker URLs; each restart after a connection failure dials the next"`
	ListenAddr         string        `envconfig:"LISTEN_ADDR" default:"127.0.0.1:8080" desc:"address of the publish API"`
	AdminAddr          string        `envconfig:"ADMIN_ADDR" default:":9464" desc:"address of /metrics, /healthz and /readyz"`
	AuthToken          string        `envconfig:"AUTH_TOKEN" desc:"bearer token required on publish requests (empty: no auth)"`
	AuthTokenFile      string        `envconfig:"AUTH_TOKEN_FILE" desc:"file holding the bearer token (e.g. a mounted Secret); overrides AUTH_TOKEN"`
	AllowedExchanges   []string      `envconfig:"ALLOWED_EXCHANGES" desc:"comma-separated exchanges that may be published to (empty: all; amq.default names the default exchange)"`
	MaxBodyBytes       int64         `envconfig:"MAX_BODY_BYTES" default:"1048576" desc:"largest accepted message body, in bytes"`
	ConfirmTimeout     time.Duration `envconfig:"CONFIRM_TIMEOUT" default:"10s" desc:"how long a publish waits for the broker's confirm before answering 504"`
	BufferSize         int           `envconfig:"BUFFER_SIZE" default:"10000" desc:"messages held while waiting to be published, e.g. during a reconnect; beyond it publishes get 503"`
	Channels           int           `envconfig:"CHANNELS" default:"1" desc:"confirm-mode channels on the connection (one measured fastest here: the broker batches its confirms; more isolate channel errors and spread a big broker's load)"`
	MaxPublishAttempts int           `envconfig:"MAX_PUBLISH_ATTEMPTS" default:"3" desc:"connection or channel failures a message may be in flight through before it is failed back"`
	MaxRestarts        int           `envconfig:"MAX_RESTARTS" default:"10" desc:"restarts of the publisher allowed within RESTART_WINDOW before the broker supervisor escalates"`
	RestartWindow      time.Duration `envconfig:"RESTART_WINDOW" default:"1m" desc:"sliding window of the restart intensity"`
	RootMaxRestarts    int           `envconfig:"ROOT_MAX_RESTARTS" default:"2" desc:"restarts of the broker subtree the root allows within ROOT_RESTART_WINDOW before giving up"`
	RootRestartWindow  time.Duration `envconfig:"ROOT_RESTART_WINDOW" default:"5m" desc:"sliding window of the root's restart intensity"`
	BackoffMin         time.Duration `envconfig:"BACKOFF_MIN" default:"100ms" desc:"first restart delay; doubles per consecutive restart with 20% jitter"`
	BackoffMax         time.Duration `envconfig:"BACKOFF_MAX" default:"5s" desc:"largest restart delay"`
	OnGiveUp           string        `envconfig:"ON_GIVE_UP" default:"exit" desc:"when the root's intensity is exhausted: exit (status 3) or degrade (stay up, not ready, 503, retry at BACKOFF_MAX)"`
	TopologyFile       string        `envconfig:"TOPOLOGY_FILE" desc:"JSON or YAML file of exchanges, queues and bindings declared on every (re)connect"`
	ShutdownTimeout    time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s" desc:"on SIGTERM, how long in-flight messages get to be confirmed"`
	SpoolDir           string        `envconfig:"SPOOL_DIR" desc:"directory of the durable spool (empty: no spool; every answer waits for the broker)"`
	SpoolMaxBytes      int64         `envconfig:"SPOOL_MAX_BYTES" default:"1073741824" desc:"bound of the spool; when full, publishes get 503 (nothing old is dropped)"`
	LogLevel           string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat          string        `envconfig:"LOG_FORMAT" default:"json" desc:"json or text"`
}

// errConfig marks configuration errors (exit status 2).
var errConfig = errors.New("invalid configuration")

func loadConfig() (*Config, error) {
	var c Config
	if err := envconfig.Process("PUBLISHER", &c); err != nil {
		return nil, fmt.Errorf("%w: %s", errConfig, redactAll(err.Error(), os.Getenv("PUBLISHER_AMQP_URLS")))
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	return &c, nil
}

// redactAll removes the passwords of the given comma-separated URLs from s
// (envconfig quotes the raw value in its errors).
func redactAll(s, urls string) string {
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			s = strings.ReplaceAll(s, u, publisher.RedactURL(u))
		}
	}
	return s
}

func (c *Config) validate() error {
	bad := func(name, format string, args ...any) error {
		return fmt.Errorf("PUBLISHER_%s: %s", name, fmt.Sprintf(format, args...))
	}
	if len(c.AMQPURLs) == 0 {
		return bad("AMQP_URLS", "at least one broker URL is required")
	}
	for i, u := range c.AMQPURLs {
		c.AMQPURLs[i] = strings.TrimSpace(u)
		if _, err := amqp.ParseURI(c.AMQPURLs[i]); err != nil {
			return bad("AMQP_URLS", "%s: %v", publisher.RedactURL(c.AMQPURLs[i]), err)
		}
	}
	for name, addr := range map[string]string{"LISTEN_ADDR": c.ListenAddr, "ADMIN_ADDR": c.AdminAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return bad(name, "%q is not host:port: %v", addr, err)
		}
	}
	positive := []struct {
		name string
		v    int64
	}{
		{"MAX_BODY_BYTES", c.MaxBodyBytes}, {"CONFIRM_TIMEOUT", int64(c.ConfirmTimeout)},
		{"BUFFER_SIZE", int64(c.BufferSize)}, {"CHANNELS", int64(c.Channels)},
		{"MAX_PUBLISH_ATTEMPTS", int64(c.MaxPublishAttempts)}, {"RESTART_WINDOW", int64(c.RestartWindow)},
		{"ROOT_RESTART_WINDOW", int64(c.RootRestartWindow)}, {"BACKOFF_MIN", int64(c.BackoffMin)},
		{"BACKOFF_MAX", int64(c.BackoffMax)}, {"SHUTDOWN_TIMEOUT", int64(c.ShutdownTimeout)},
		{"SPOOL_MAX_BYTES", c.SpoolMaxBytes},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return bad(p.name, "must be positive")
		}
	}
	if c.MaxRestarts < 0 {
		return bad("MAX_RESTARTS", "must not be negative")
	}
	if c.RootMaxRestarts < 0 {
		return bad("ROOT_MAX_RESTARTS", "must not be negative")
	}
	if c.Channels > 1000 {
		return bad("CHANNELS", "at most 1000")
	}
	if c.BackoffMax < c.BackoffMin {
		return bad("BACKOFF_MAX", "must not be less than PUBLISHER_BACKOFF_MIN")
	}
	switch c.OnGiveUp {
	case "exit", "degrade":
	default:
		return bad("ON_GIVE_UP", "%q: want exit or degrade", c.OnGiveUp)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("LOG_LEVEL", "%q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return bad("LOG_FORMAT", "%q: want json or text", c.LogFormat)
	}
	if c.AuthTokenFile != "" {
		b, err := os.ReadFile(c.AuthTokenFile)
		if err != nil {
			return bad("AUTH_TOKEN_FILE", "%v", err)
		}
		c.AuthToken = strings.TrimSpace(string(b))
		if c.AuthToken == "" {
			return bad("AUTH_TOKEN_FILE", "%s is empty", c.AuthTokenFile)
		}
	}
	for _, e := range c.AllowedExchanges {
		if strings.TrimSpace(e) == "" {
			return bad("ALLOWED_EXCHANGES", "empty exchange name in the list")
		}
	}
	return nil
}
