package service

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/fakeamqp"
)

// Validate reads no file and creates none, and changes nothing of the Config
// (the URLs keep their spaces in the caller's slice): a missing token file and
// a missing spool directory are prepare's to find.
func TestValidateIsPure(t *testing.T) {
	checkLeaks(t)
	dir := filepath.Join(t.TempDir(), "not", "yet")
	c := (Config{}).withDefaults()
	c.AMQPURLs = []string{" amqp://guest:guest@127.0.0.1:5672/ ", "amqp://127.0.0.1:5673/"}
	c.AuthTokenFile = filepath.Join(dir, "token")
	c.SpoolDir = dir
	before := c
	before.AMQPURLs = slices.Clone(c.AMQPURLs)
	for range 2 {
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate = %v", err)
		}
	}
	if !reflect.DeepEqual(c, before) {
		t.Fatalf("Validate changed the Config:\n%+v\nwas\n%+v", c, before)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Validate touched the spool directory: stat = %v", err)
	}
}

// Validate reports every problem, in the order of Config's fields, the same
// way at every call; an error per variable, naming it.
func TestValidateReportsEveryProblemInFieldOrder(t *testing.T) {
	checkLeaks(t)
	c := Config{ // every field that can be wrong, wrong
		AMQPURLs:           []string{"http://user:s3cret@host/"},
		AMQPTLSCertFile:    "client.pem", // without its key
		AMQPTLSServerName:  "https://broker:5671",
		AMQPAuthMechanism:  "KERBEROS",
		ListenAddr:         "nonsense",
		TLSKeyFile:         "server.key", // without its certificate
		TLSClientCAFile:    "clients.pem",
		AdminAddr:          "nonsense",
		AuthToken:          "s3cret", // with AuthFile: one or the other
		AuthFile:           "apps.yaml",
		AllowedExchanges:   []string{" "},
		MaxBodyBytes:       -1,
		ConfirmTimeout:     -1,
		BufferSize:         -1,
		Channels:           1001,
		MaxPublishAttempts: -1,
		MaxRestarts:        -1,
		RestartWindow:      -1,
		RootMaxRestarts:    -1,
		RootRestartWindow:  -1,
		BackoffMin:         -1,
		BackoffMax:         -1,
		OnGiveUp:           "maybe",
		ShutdownTimeout:    -1,
		MaxBatchMessages:   -1,
		MaxBatchBytes:      -1,
		StreamWindow:       -1,
		SpoolMaxBytes:      -1,
		CloudEventsSource:  "\x00",
		CloudEventsHeaders: "x-",
		LogLevel:           "loud",
		LogFormat:          "xml",
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate = nil")
	}
	for range 3 {
		if again := c.Validate(); again.Error() != err.Error() {
			t.Fatalf("Validate's answer changed:\n%v\nthen\n%v", err, again)
		}
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Validate quotes a password:\n%v", err)
	}
	var got []string
	for _, line := range strings.Split(err.Error(), "\n") {
		name, _, _ := strings.Cut(line, ":")
		got = append(got, name)
	}
	// Config's fields in order, less those with nothing to check without the
	// file system (the token, its file, the topology file, the spool
	// directory, the broker URLs file, the broker's CA file) and the halves of
	// the certificate and key pairs whose other half is the one wrong here.
	var want []string
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		tag := ct.Field(i).Tag.Get("envconfig")
		switch tag {
		case "", "AUTH_TOKEN", "AUTH_TOKEN_FILE", "TOPOLOGY_FILE", "SPOOL_DIR",
			"AMQP_URLS_FILE", "AMQP_TLS_CA_FILE", "AMQP_TLS_KEY_FILE", "TLS_CERT_FILE":
			continue
		}
		want = append(want, "PUBLISHER_"+tag)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Validate's errors name\n%v\nwant, in the order of Config's fields,\n%v\nerror:\n%v", got, want, err)
	}
}

// Two problems of one variable that follow from one another are reported
// once: a negative PUBLISHER_BACKOFF_MAX is not positive, and that is all.
func TestValidateBackoffOrderOnlyBetweenValidValues(t *testing.T) {
	checkLeaks(t)
	c := (Config{}).withDefaults()
	c.BackoffMax = -time.Second
	if err := c.Validate(); err == nil || strings.Count(err.Error(), "PUBLISHER_BACKOFF_MAX") != 1 {
		t.Fatalf("Validate = %v, want one error naming PUBLISHER_BACKOFF_MAX", err)
	}
}

// prepare reads the token file (trimmed), creates the spool directory with
// its parents, trims the broker URLs into a slice of its own and parses the
// CloudEvents convention.
func TestPrepare(t *testing.T) {
	checkLeaks(t)
	tmp := t.TempDir()
	token := filepath.Join(tmp, "token")
	if err := os.WriteFile(token, []byte(" t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	urls := []string{" amqp://127.0.0.1:5672/", "amqp://127.0.0.1:5673/ "}
	c := (Config{AMQPURLs: urls, AuthTokenFile: token, SpoolDir: filepath.Join(tmp, "a", "spool"), CloudEventsHeaders: "cloudEvents:"}).withDefaults()
	if err := c.prepare(); err != nil {
		t.Fatalf("prepare = %v", err)
	}
	if c.AuthToken != "t0ken" {
		t.Errorf("AuthToken = %q, want the file's content trimmed", c.AuthToken)
	}
	if fi, err := os.Stat(c.SpoolDir); err != nil || !fi.IsDir() {
		t.Errorf("spool directory not created: %v", err)
	}
	if ents, err := os.ReadDir(c.SpoolDir); err != nil || len(ents) != 0 {
		t.Errorf("the write probe left %v (%v)", ents, err)
	}
	if want := []string{"amqp://127.0.0.1:5672/", "amqp://127.0.0.1:5673/"}; !slices.Equal(c.AMQPURLs, want) {
		t.Errorf("AMQPURLs = %q, want %q", c.AMQPURLs, want)
	}
	if urls[0] != " amqp://127.0.0.1:5672/" {
		t.Errorf("prepare changed the caller's slice: %q", urls)
	}
	if c.cloudEventsConvention == (Config{}).cloudEventsConvention {
		t.Errorf("the CloudEvents convention was not parsed")
	}
}

// prepare's errors name the variable, and quote the token file's path, never
// its content (here: a directory, which has none).
func TestPrepareNamesTheVariable(t *testing.T) {
	checkLeaks(t)
	tmp := t.TempDir()
	empty := filepath.Join(tmp, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.AuthTokenFile = filepath.Join(tmp, "missing") }, "PUBLISHER_AUTH_TOKEN_FILE: cannot read"},
		{func(c *Config) { c.AuthTokenFile = empty }, "PUBLISHER_AUTH_TOKEN_FILE: " + empty + " is empty"},
		{func(c *Config) { c.AuthTokenFile = tmp }, "PUBLISHER_AUTH_TOKEN_FILE: cannot read"}, // a directory
		{func(c *Config) { c.SpoolDir = "/proc/no-spool-here" }, "PUBLISHER_SPOOL_DIR: /proc/no-spool-here is not a usable directory"},
		{func(c *Config) { c.SpoolDir = empty }, "PUBLISHER_SPOOL_DIR"}, // a file
	}
	for _, tt := range cases {
		c := (Config{}).withDefaults()
		tt.edit(&c)
		err := c.prepare()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("prepare = %v, want an error containing %q", err, tt.want)
		}
	}
}

// New validates and prepares: a configuration problem of either kind is
// ErrConfig (the command's status 2), found before anything listens; a good
// token file is read into the service's configuration.
func TestNewPreparesTheConfiguration(t *testing.T) {
	checkLeaks(t)
	tmp := t.TempDir()
	token := filepath.Join(tmp, "token")
	if err := os.WriteFile(token, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	newFake := (&fakeamqp.Broker{}).Dial
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, edit := range []func(*Config){
		func(c *Config) { c.Channels = -1 },
		func(c *Config) { c.AuthTokenFile = filepath.Join(tmp, "missing") },
		func(c *Config) { c.SpoolDir = "/proc/no-spool-here" },
	} {
		cfg := testConfig()
		cfg.ListenAddr = taken.Addr().String() // in use: had New listened first, it would fail with that
		edit(&cfg)
		if _, err := newService(cfg, Options{Logger: discard()}, newFake); !errors.Is(err, ErrConfig) {
			t.Errorf("New = %v, want ErrConfig, before listening", err)
		}
	}
	cfg := testConfig()
	cfg.AuthTokenFile = token
	s, err := newService(cfg, Options{Logger: discard()}, newFake)
	if err != nil {
		t.Fatal(err)
	}
	defer s.closeListeners()
	if s.cfg.AuthToken != "t0ken" {
		t.Fatalf("the service's token is %q, want the file's", s.cfg.AuthToken)
	}
}

func TestUnknownVariables(t *testing.T) {
	checkLeaks(t)
	environ := []string{
		"PATH=/usr/bin",
		"PUBLISHER_AMQP_URLS=amqp://guest:guest@127.0.0.1:5672/", // a setting
		"PUBLISHER_AMQP_URL=amqp://user:s3cret@broker/",          // singular
		"PUBLISHER_CONFIRM_TIMEOT=3s",                            // a letter missing
		"PUBLISHER_LOGLEVEL=debug",                               // no underscore
		"publisher_buffer_size=5",                                // lower case
		"PUBLISHER_TEST_AMQP_URL=amqp://x/",                      // nothing close
		"PUBLISHER_PPROF_ADDR=127.0.0.1:6060",                    // the caller's
		"PUBLISHER_AMQP_URL=amqp://again/",                       // twice in the environment
		"PUBLISHER_NOVALUE",                                      // no '='
		"NOT_PUBLISHER_AMQP_URL=x",
	}
	got := UnknownVariables(environ, "PUBLISHER_PPROF_ADDR")
	want := []UnknownVariable{
		{"PUBLISHER_AMQP_URL", "PUBLISHER_AMQP_URLS"},
		{"PUBLISHER_CONFIRM_TIMEOT", "PUBLISHER_CONFIRM_TIMEOUT"},
		{"PUBLISHER_LOGLEVEL", "PUBLISHER_LOG_LEVEL"},
		{"PUBLISHER_NOVALUE", ""},
		{"PUBLISHER_TEST_AMQP_URL", ""},
		{"publisher_buffer_size", "PUBLISHER_BUFFER_SIZE"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("UnknownVariables =\n%q\nwant\n%q", got, want)
	}
	if s := got[0].String(); s != "PUBLISHER_AMQP_URL is not a setting; did you mean PUBLISHER_AMQP_URLS?" {
		t.Errorf("the warning reads %q", s)
	}
	if s := got[3].String(); s != "PUBLISHER_NOVALUE is not a setting; publisher -help lists them" {
		t.Errorf("the warning without a suggestion reads %q", s)
	}
	for _, u := range got {
		if strings.ContainsAny(u.String(), "=:/") || strings.Contains(u.String(), "s3cret") {
			t.Errorf("the warning %q shows a value", u)
		}
	}
	// Every setting is known: an environment of only settings warns of nothing.
	var settings []string
	for _, n := range settingNames() {
		settings = append(settings, n+"=x")
	}
	if len(settings) != reflect.TypeFor[Config]().NumField()-2 { // all but cloudEventsConvention and authApps
		t.Fatalf("settingNames found %d settings, want one per exported field of Config", len(settings))
	}
	if got := UnknownVariables(settings); len(got) != 0 {
		t.Errorf("settings reported unknown: %q", got)
	}
}

// Each setting misspelled by one edit (a letter dropped, doubled or changed)
// gets itself suggested, not a neighbour.
func TestUnknownVariablesSuggestTheMisspelledSetting(t *testing.T) {
	checkLeaks(t)
	for _, name := range settingNames() {
		key := name[len(variablePrefix):]
		for i := range len(key) {
			for _, typo := range []string{key[:i] + key[i+1:], key[:i+1] + key[i:], key[:i] + "X" + key[i+1:]} {
				typo = variablePrefix + typo
				if slices.Contains(settingNames(), typo) { // an X where there was one
					continue
				}
				got := UnknownVariables([]string{typo + "=v"})
				if len(got) != 1 || got[0].Closest != name {
					t.Errorf("%s: got %q, want the suggestion %s", typo, got, name)
				}
			}
		}
	}
}

func TestEditDistance(t *testing.T) {
	checkLeaks(t)
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"", "ABC", 3}, {"ABC", "", 3}, {"ABC", "ABC", 0},
		{"AMQP_URL", "AMQP_URLS", 1}, {"CONFIRM_TIMEOT", "CONFIRM_TIMEOUT", 1},
		{"KITTEN", "SITTING", 3}, {"FLAW", "LAWN", 2}, {"TEST_AMQP_URL", "AMQP_URLS", 6},
	} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := editDistance(tt.b, tt.a); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d (symmetric)", tt.b, tt.a, got, tt.want)
		}
	}
}
