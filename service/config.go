package service

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/publisher-dev/publisher/apps"
	"github.com/publisher-dev/publisher/cloudevents"
	"github.com/publisher-dev/publisher/idempotency"
	"github.com/publisher-dev/publisher/publisher"
)

// Config is the whole configuration of the service. Each field's envconfig
// tag names its PUBLISHER_* variable and its default, which is also what a
// zero field means to New (docs/configuration.md's table lists them).
type Config struct {
	AMQPURLs           []string      `envconfig:"AMQP_URLS" default:"amqp://guest:guest@localhost:5672/" desc:"comma-separated broker URLs; each restart after a connection failure dials the next"`
	AMQPURLsFile       string        `envconfig:"AMQP_URLS_FILE" desc:"file of broker URLs with their credentials (e.g. a mounted Secret), separated by commas or line breaks, read again at every connection attempt; wins over AMQP_URLS"`
	AMQPTLSCAFile      string        `envconfig:"AMQP_TLS_CA_FILE" desc:"PEM bundle of the CAs that verify the broker on amqps:// (empty: the system's roots); read at every connection attempt"`
	AMQPTLSCertFile    string        `envconfig:"AMQP_TLS_CERT_FILE" desc:"client certificate (PEM, leaf first) for mutual TLS with the broker, with AMQP_TLS_KEY_FILE; read at every connection attempt"`
	AMQPTLSKeyFile     string        `envconfig:"AMQP_TLS_KEY_FILE" desc:"unencrypted private key (PEM) of AMQP_TLS_CERT_FILE; read at every connection attempt"`
	AMQPTLSServerName  string        `envconfig:"AMQP_TLS_SERVER_NAME" desc:"name the broker's certificate must carry (empty: the host of the URL)"`
	AMQPAuthMechanism  string        `envconfig:"AMQP_AUTH_MECHANISM" default:"PLAIN" desc:"PLAIN (the user and password of the URL) or EXTERNAL (the identity of the client certificate; amqps:// URLs without user or password)"`
	ListenAddr         string        `envconfig:"LISTEN_ADDR" default:"127.0.0.1:8080" desc:"address of the publish API"`
	TLSCertFile        string        `envconfig:"TLS_CERT_FILE" desc:"certificate (PEM, leaf first) that serves the publish API over HTTPS, with TLS_KEY_FILE; read again when it changes (empty: plain HTTP)"`
	TLSKeyFile         string        `envconfig:"TLS_KEY_FILE" desc:"unencrypted private key (PEM) of TLS_CERT_FILE; read again when it changes"`
	TLSClientCAFile    string        `envconfig:"TLS_CLIENT_CA_FILE" desc:"PEM bundle of CAs: the publish API then requires a client certificate one of them issued (HTTPS only); read again when it changes"`
	AdminAddr          string        `envconfig:"ADMIN_ADDR" default:":9464" desc:"address of /metrics, /healthz and /readyz"`
	AuthToken          string        `envconfig:"AUTH_TOKEN" desc:"bearer token required on publish requests (empty: no auth)"`
	AuthTokenFile      string        `envconfig:"AUTH_TOKEN_FILE" desc:"file holding the bearer token (e.g. a mounted Secret); overrides AUTH_TOKEN"`
	AuthFile           string        `envconfig:"AUTH_FILE" desc:"YAML or JSON file of apps, each with its token (as a SHA-256 digest or a token file), exchanges, routing-key patterns and rate; reloaded when it changes and on SIGHUP; not with AUTH_TOKEN or AUTH_TOKEN_FILE"`
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
	OnGiveUp           string        `envconfig:"ON_GIVE_UP" default:"degrade" desc:"when the root's intensity is exhausted, without a spool: degrade (stay up, not ready, 503, retry at BACKOFF_MAX: back within seconds of the broker) or exit (status 3: the container runtime's restart back-off takes over); with a spool the service always stays up and retries"`
	TopologyFile       string        `envconfig:"TOPOLOGY_FILE" desc:"JSON or YAML file of exchanges, queues and bindings declared on every (re)connect"`
	ShutdownTimeout    time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s" desc:"on SIGTERM, how long in-flight messages get to be confirmed; the process exits within it plus a second or two"`
	MaxBatchMessages   int           `envconfig:"MAX_BATCH_MESSAGES" default:"1000" desc:"most messages in one /v1/batch request (413 beyond)"`
	MaxBatchBytes      int64         `envconfig:"MAX_BATCH_BYTES" default:"16777216" desc:"largest /v1/batch request body, in bytes (413 beyond)"`
	StreamWindow       int           `envconfig:"STREAM_WINDOW" default:"1024" desc:"messages of one /v1/stream taken and not answered yet; beyond it the service stops reading the stream (backpressure)"`
	SpoolDir           string        `envconfig:"SPOOL_DIR" desc:"directory of the durable spool (empty: no spool; every answer waits for the broker)"`
	SpoolMaxBytes      int64         `envconfig:"SPOOL_MAX_BYTES" default:"1073741824" desc:"bound of the spool; when full, publishes get 503 (nothing old is dropped)"`
	IdempotencyWindow  time.Duration `envconfig:"IDEMPOTENCY_WINDOW" default:"1h" desc:"how long an idempotency key is kept after its message's outcome (a retry within it is answered from memory)"`
	IdempotencyMaxKeys int           `envconfig:"IDEMPOTENCY_MAX_KEYS" default:"100000" desc:"most idempotency keys kept (about 140 bytes each); beyond it the oldest go first"`
	CloudEventsSource  string        `envconfig:"CLOUDEVENTS_SOURCE" desc:"when set, the source of the CloudEvents a plain request asks to be wrapped as (Prefer: cloudevents or X-CloudEvents: binary); empty: no wrapping"`
	CloudEventsHeaders string        `envconfig:"CLOUDEVENTS_HEADERS" default:"ce-" desc:"how CloudEvents attributes are named as AMQP headers: ce- (Knative eventing-rabbitmq reads them), cloudEvents_ or cloudEvents: (the CloudEvents AMQP binding), or none (no prefix, as Knative's broker writes them)"`
	LogLevel           string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat          string        `envconfig:"LOG_FORMAT" default:"json" desc:"json or text"`

	// cloudEventsConvention is CloudEventsHeaders, parsed by prepare.
	cloudEventsConvention cloudevents.Convention
	// authApps is AuthFile's apps as prepare loaded them (nil without
	// AuthFile).
	authApps *apps.Set
}

// ErrConfig marks configuration errors (the command exits with status 2).
var ErrConfig = errors.New("invalid configuration")

// withDefaults fills every zero field with its default, the same as its
// envconfig tag says (a test checks that the two agree).
func (c Config) withDefaults() Config {
	if len(c.AMQPURLs) == 0 {
		c.AMQPURLs = []string{"amqp://guest:guest@localhost:5672/"}
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.AMQPAuthMechanism, string(publisher.AuthPlain))
	def(&c.ListenAddr, "127.0.0.1:8080")
	def(&c.AdminAddr, ":9464")
	def(&c.OnGiveUp, "degrade")
	def(&c.LogLevel, "info")
	def(&c.LogFormat, "json")
	def(&c.CloudEventsHeaders, "ce-")
	defInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defInt(&c.BufferSize, 10000)
	defInt(&c.Channels, 1)
	defInt(&c.MaxPublishAttempts, 3)
	defInt(&c.MaxRestarts, 10)
	defInt(&c.RootMaxRestarts, 2)
	defInt(&c.MaxBatchMessages, 1000)
	defInt(&c.StreamWindow, 1024)
	defInt(&c.IdempotencyMaxKeys, idempotency.DefaultMaxKeys) // the tag says the same: TestDefaultsMatchTheTags
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	defDur(&c.ConfirmTimeout, publisher.DefaultConfirmTimeout) // the tag says the same: TestDefaultsMatchTheTags
	defDur(&c.RestartWindow, time.Minute)
	defDur(&c.RootRestartWindow, 5*time.Minute)
	defDur(&c.BackoffMin, 100*time.Millisecond)
	defDur(&c.BackoffMax, 5*time.Second)
	defDur(&c.ShutdownTimeout, 15*time.Second)
	defDur(&c.IdempotencyWindow, idempotency.DefaultWindow)
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.SpoolMaxBytes == 0 {
		c.SpoolMaxBytes = 1 << 30
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 16 << 20
	}
	return c
}

// Validate reports what is wrong with c: every problem, in the order of
// Config's fields, joined with errors.Join; nil when nothing is. Each names
// its variable and never quotes a secret (a broker URL is shown with its
// password masked, a token never).
//
// Validate only reads c: it changes nothing and reads or creates no file, so
// the same Config always gets the same answer, however often it is asked (the
// command asks before it sets up logging, New asks again). What needs the
// file system, the token file and the spool directory, is prepare's, which New
// runs once.
//
// What Validate and prepare refuse is configuration (the command exits with
// status 2): values out of range, a token file, TLS file or broker URLs file
// that cannot be read or parsed at start, a spool directory that cannot be
// created or written. What fails later, while the
// service opens its resources (a disk error reading the spool, a listen
// address in use), is a runtime failure (status 1).
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("PUBLISHER_%s: %s", name, fmt.Sprintf(format, args...)))
	}
	positive := func(name string, v int64) {
		if v <= 0 {
			bad(name, "must be positive")
		}
	}
	notNegative := func(name string, v int) {
		if v < 0 {
			bad(name, "must not be negative")
		}
	}
	pc := c.brokerSecurity()
	if c.AMQPURLsFile == "" { // else the file's URLs are used, checked by prepare
		if len(c.AMQPURLs) == 0 {
			bad("AMQP_URLS", "at least one broker URL is required")
		}
		for _, u := range c.AMQPURLs {
			u = strings.TrimSpace(u)
			if u == "" {
				bad("AMQP_URLS", "empty URL in the list")
				continue
			}
			if err := pc.CheckURL(u); err != nil {
				bad("AMQP_URLS", "%v", err)
			}
		}
	}
	bothOrNeither := func(cert, key, certFile, keyFile string) {
		switch {
		case certFile != "" && keyFile == "":
			bad(cert, "set without PUBLISHER_%s (set both, or neither)", key)
		case certFile == "" && keyFile != "":
			bad(key, "set without PUBLISHER_%s (set both, or neither)", cert)
		}
	}
	bothOrNeither("AMQP_TLS_CERT_FILE", "AMQP_TLS_KEY_FILE", c.AMQPTLSCertFile, c.AMQPTLSKeyFile)
	if n := c.AMQPTLSServerName; n != "" && net.ParseIP(n) == nil && !validHostname(n) {
		bad("AMQP_TLS_SERVER_NAME", "%q is not a host name (a DNS name or an IP address, without scheme or port)", n)
	}
	switch publisher.AuthMechanism(strings.ToUpper(c.AMQPAuthMechanism)) {
	case publisher.AuthPlain:
	case publisher.AuthExternal:
		if c.AMQPTLSCertFile == "" || c.AMQPTLSKeyFile == "" {
			bad("AMQP_AUTH_MECHANISM", "EXTERNAL takes the identity from the client certificate: set PUBLISHER_AMQP_TLS_CERT_FILE and PUBLISHER_AMQP_TLS_KEY_FILE")
		}
	default:
		bad("AMQP_AUTH_MECHANISM", "%q: want PLAIN or EXTERNAL", c.AMQPAuthMechanism)
	}
	hostPort := func(name, addr string) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(name, "%q is not host:port (for example 127.0.0.1:8080)", addr)
		}
	}
	hostPort("LISTEN_ADDR", c.ListenAddr)
	bothOrNeither("TLS_CERT_FILE", "TLS_KEY_FILE", c.TLSCertFile, c.TLSKeyFile)
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		bad("TLS_CLIENT_CA_FILE", "client certificates need HTTPS: set PUBLISHER_TLS_CERT_FILE and PUBLISHER_TLS_KEY_FILE too")
	}
	hostPort("ADMIN_ADDR", c.AdminAddr)
	if c.AuthFile != "" && (c.AuthToken != "" || c.AuthTokenFile != "") {
		// One or the other: the file's apps are there to replace the one
		// shared token, and a token kept beside them would still publish
		// anywhere at any rate.
		bad("AUTH_FILE", "set with PUBLISHER_AUTH_TOKEN or PUBLISHER_AUTH_TOKEN_FILE: give the apps file or the one token, not both (make the token an app of the file)")
	}
	if slices.ContainsFunc(c.AllowedExchanges, func(e string) bool { return strings.TrimSpace(e) == "" }) {
		bad("ALLOWED_EXCHANGES", "empty exchange name in the list")
	}
	positive("MAX_BODY_BYTES", c.MaxBodyBytes)
	positive("CONFIRM_TIMEOUT", int64(c.ConfirmTimeout))
	positive("BUFFER_SIZE", int64(c.BufferSize))
	positive("CHANNELS", int64(c.Channels))
	if c.Channels > 1000 {
		bad("CHANNELS", "at most 1000")
	}
	positive("MAX_PUBLISH_ATTEMPTS", int64(c.MaxPublishAttempts))
	notNegative("MAX_RESTARTS", c.MaxRestarts)
	positive("RESTART_WINDOW", int64(c.RestartWindow))
	notNegative("ROOT_MAX_RESTARTS", c.RootMaxRestarts)
	positive("ROOT_RESTART_WINDOW", int64(c.RootRestartWindow))
	positive("BACKOFF_MIN", int64(c.BackoffMin))
	positive("BACKOFF_MAX", int64(c.BackoffMax))
	if c.BackoffMin > 0 && c.BackoffMax > 0 && c.BackoffMax < c.BackoffMin {
		bad("BACKOFF_MAX", "must not be less than PUBLISHER_BACKOFF_MIN")
	}
	if c.OnGiveUp != "exit" && c.OnGiveUp != "degrade" {
		bad("ON_GIVE_UP", "%q: want exit or degrade", c.OnGiveUp)
	}
	positive("SHUTDOWN_TIMEOUT", int64(c.ShutdownTimeout))
	positive("MAX_BATCH_MESSAGES", int64(c.MaxBatchMessages))
	positive("MAX_BATCH_BYTES", c.MaxBatchBytes)
	positive("STREAM_WINDOW", int64(c.StreamWindow))
	positive("SPOOL_MAX_BYTES", c.SpoolMaxBytes)
	positive("IDEMPOTENCY_WINDOW", int64(c.IdempotencyWindow))
	positive("IDEMPOTENCY_MAX_KEYS", int64(c.IdempotencyMaxKeys))
	if c.CloudEventsSource != "" {
		if err := cloudevents.CheckSource(c.CloudEventsSource); err != nil {
			bad("CLOUDEVENTS_SOURCE", "%v", err)
		}
	}
	if _, err := cloudevents.ParseConvention(c.CloudEventsHeaders); err != nil {
		bad("CLOUDEVENTS_HEADERS", "%q: want ce-, cloudEvents_, cloudEvents: or none", c.CloudEventsHeaders)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("LOG_LEVEL", "%q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("LOG_FORMAT", "%q: want json or text", c.LogFormat)
	}
	return errors.Join(errs...)
}

// prepare completes a valid c into what the service runs with, and is the one
// step that touches the file system for the configuration: it reads
// AuthTokenFile into AuthToken, loads AuthFile's apps (and the token files it
// names), reads every TLS file and the broker URLs file once (readTLSFiles),
// creates SpoolDir when missing and checks that a file can be made in it (so
// an unusable directory is configuration, status 2, not a runtime failure of
// the spool). It also trims the broker URLs (into
// a slice of its own: the caller's is not changed) and parses the CloudEvents
// header convention. New calls it once, after Validate; nothing else does (the
// command leaves it to New), so the token file is read and the directory
// probed once per service. Its errors name the variable and quote no secret:
// the token file's path, never its content; for the apps file its path, the
// line of a syntax error or the app and field at fault, never a value.
func (c *Config) prepare() error {
	urls := make([]string, len(c.AMQPURLs))
	for i, u := range c.AMQPURLs {
		urls[i] = strings.TrimSpace(u)
	}
	c.AMQPURLs = urls
	c.AMQPAuthMechanism = strings.ToUpper(c.AMQPAuthMechanism)
	if err := c.readTLSFiles(); err != nil {
		return err
	}
	conv, err := cloudevents.ParseConvention(c.CloudEventsHeaders)
	if err != nil { // Validate refused it already
		return fmt.Errorf("PUBLISHER_CLOUDEVENTS_HEADERS: %w", err)
	}
	c.cloudEventsConvention = conv
	if c.AuthTokenFile != "" {
		b, err := os.ReadFile(c.AuthTokenFile)
		if err != nil {
			return fmt.Errorf("PUBLISHER_AUTH_TOKEN_FILE: cannot read %s: %w", c.AuthTokenFile, pathErr(err))
		}
		c.AuthToken = strings.TrimSpace(string(b))
		if c.AuthToken == "" {
			return fmt.Errorf("PUBLISHER_AUTH_TOKEN_FILE: %s is empty", c.AuthTokenFile)
		}
	}
	if c.AuthFile != "" {
		set, err := apps.Load(c.AuthFile)
		if err != nil {
			return fmt.Errorf("PUBLISHER_AUTH_FILE: %w", err)
		}
		c.authApps = set
	}
	if c.SpoolDir != "" {
		if err := writableDir(c.SpoolDir); err != nil {
			return fmt.Errorf("PUBLISHER_SPOOL_DIR: %s is not a usable directory: %w", c.SpoolDir, err)
		}
	}
	return nil
}

// brokerSecurity is the publisher's configuration of TLS and
// authentication (and the URLs file), for checking URLs and for New.
func (c Config) brokerSecurity() publisher.Config {
	return publisher.Config{
		URLsFile: c.AMQPURLsFile,
		TLS: publisher.TLSFiles{
			CAFile:     c.AMQPTLSCAFile,
			CertFile:   c.AMQPTLSCertFile,
			KeyFile:    c.AMQPTLSKeyFile,
			ServerName: c.AMQPTLSServerName,
		},
		AuthMechanism: publisher.AuthMechanism(strings.ToUpper(c.AMQPAuthMechanism)),
	}
}

// readTLSFiles reads, once at start, every file of the broker's and the
// publish API's TLS and the broker URLs file, so that one that cannot be read
// or parsed is a configuration error naming its variable (the command's
// status 2). The publisher reads the broker's files again at every connection
// attempt and the publish API its own when they change: later failures are
// those of a connection attempt, or keep the certificate in use.
func (c *Config) readTLSFiles() error {
	pc := c.brokerSecurity()
	if c.AMQPURLsFile != "" {
		if _, err := pc.ReadURLsFile(); err != nil {
			return fmt.Errorf("PUBLISHER_AMQP_URLS_FILE: %w", err)
		}
	}
	if _, err := loadCA("AMQP_TLS_CA_FILE", c.AMQPTLSCAFile); err != nil {
		return err
	}
	if _, err := loadKeyPair("AMQP_TLS_CERT_FILE", "AMQP_TLS_KEY_FILE", c.AMQPTLSCertFile, c.AMQPTLSKeyFile); err != nil {
		return err
	}
	if _, err := loadKeyPair("TLS_CERT_FILE", "TLS_KEY_FILE", c.TLSCertFile, c.TLSKeyFile); err != nil {
		return err
	}
	_, err := loadCA("TLS_CLIENT_CA_FILE", c.TLSClientCAFile)
	return err
}

// loadCA reads the CA bundle of variable name (nil, nil when path is empty);
// its error names the variable.
func loadCA(name, path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	pool, err := publisher.LoadCAFile(path)
	if err != nil {
		return nil, fmt.Errorf("PUBLISHER_%s: %w", name, err)
	}
	return pool, nil
}

// loadKeyPair reads the certificate and key of variables cert and key (a
// zero certificate when certFile is empty); its error names the variable
// whose file is at fault.
func loadKeyPair(cert, key, certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" {
		return tls.Certificate{}, nil
	}
	pair, err := publisher.LoadKeyPair(certFile, keyFile)
	var fe *publisher.FileError
	switch {
	case err == nil:
		return pair, nil
	case errors.As(err, &fe) && fe.Path == keyFile && keyFile != certFile:
		return tls.Certificate{}, fmt.Errorf("PUBLISHER_%s: %w", key, err)
	}
	return tls.Certificate{}, fmt.Errorf("PUBLISHER_%s: %w", cert, err)
}

// validHostname reports whether name may be a DNS name: labels of letters,
// digits, '-' and '_' (wildcard certificates aside, a name to verify has no
// '*'), separated by dots.
func validHostname(name string) bool {
	if len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// writableDir creates dir when missing and checks that a file can be made in
// it.
func writableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return pathErr(err)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return pathErr(err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(filepath.Clean(name))
}

// pathErr is the operating system's reason without the path it names (the
// caller names it once).
func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// UnknownVariable is a PUBLISHER_* variable of the environment that is not a
// setting: most likely a misspelling, which would otherwise leave the setting
// it meant at its default without a word (PUBLISHER_AMQP_URL=... and the
// service dials the default broker).
type UnknownVariable struct {
	Name    string // as it is in the environment
	Closest string // the setting it most likely means; empty when none is close
}

// String is the warning: "PUBLISHER_AMQP_URL is not a setting; did you mean
// PUBLISHER_AMQP_URLS?", or, with nothing close, "PUBLISHER_FOO is not a
// setting; publisher -help lists them".
func (u UnknownVariable) String() string {
	if u.Closest == "" {
		return u.Name + " is not a setting; publisher -help lists them"
	}
	return u.Name + " is not a setting; did you mean " + u.Closest + "?"
}

// variablePrefix begins the name of every setting.
const variablePrefix = "PUBLISHER_"

// UnknownVariables returns, sorted by name and each once, the variables of
// environ (os.Environ's NAME=value form) whose name begins with PUBLISHER_,
// in any case, and is neither a setting (the envconfig tags of Config) nor one
// of also (variables the caller reads itself). Only the names are read: a
// value may be a secret, and none is kept.
//
// Closest is the setting (or one of also) at the smallest edit distance
// (Levenshtein, letters compared without case, the prefix left out) when that
// distance is at most a third of the unknown name's length after the prefix,
// and at least 1: PUBLISHER_AMQP_URL and PUBLISHER_AMQP_URI get
// PUBLISHER_AMQP_URLS, PUBLISHER_TEST_AMQP_URL nothing. A tie goes to the
// setting that comes first in Config.
func UnknownVariables(environ []string, also ...string) []UnknownVariable {
	known := append(settingNames(), also...)
	var unknown []UnknownVariable
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !hasPrefixFold(name, variablePrefix) || slices.Contains(known, name) {
			continue
		}
		unknown = append(unknown, UnknownVariable{Name: name, Closest: closest(name, known)})
	}
	slices.SortFunc(unknown, func(a, b UnknownVariable) int { return strings.Compare(a.Name, b.Name) })
	return slices.Compact(unknown)
}

// settingNames are the PUBLISHER_* variables of Config, in its order.
func settingNames() []string {
	var names []string
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		if tag := ct.Field(i).Tag.Get("envconfig"); tag != "" {
			names = append(names, variablePrefix+tag)
		}
	}
	return names
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// closest is the name of known nearest to name (see UnknownVariables), or "".
func closest(name string, known []string) string {
	key := strings.ToUpper(name[len(variablePrefix):])
	best, bestDist := "", max(1, len(key)/3)+1
	for _, k := range known {
		if !hasPrefixFold(k, variablePrefix) {
			continue
		}
		if d := editDistance(key, strings.ToUpper(k[len(variablePrefix):])); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, byte by byte
// (the names are ASCII). Hand-written, 15 lines rather than a dependency: it
// gave the same distance as github.com/agnivade/levenshtein v1.2.2 on all of
// 10^6 random pairs of names of up to 30 letters of [A-Z_] (measured once).
func editDistance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
