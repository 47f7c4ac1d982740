package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/service"
)

// logRecords parses the JSON log lines of out (other lines are skipped).
func logRecords(out string) []map[string]any {
	var recs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var r map[string]any
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			recs = append(recs, r)
		}
	}
	return recs
}

// warnUnknown writes one WARN record per unknown variable: the sentence as
// the message, the variable and the suggestion as attributes.
func TestWarnUnknownLogsAtWarn(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	warnUnknown(log, []service.UnknownVariable{
		{Name: "PUBLISHER_AMQP_URL", Closest: "PUBLISHER_AMQP_URLS"},
		{Name: "PUBLISHER_FOO"},
	})
	recs := logRecords(buf.String())
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2:\n%s", len(recs), buf.String())
	}
	want := []map[string]any{
		{"level": "WARN", "msg": "PUBLISHER_AMQP_URL is not a setting; did you mean PUBLISHER_AMQP_URLS?",
			"variable": "PUBLISHER_AMQP_URL", "did_you_mean": "PUBLISHER_AMQP_URLS"},
		{"level": "WARN", "msg": "PUBLISHER_FOO is not a setting; publisher -help lists them", "variable": "PUBLISHER_FOO"},
	}
	for i, r := range recs {
		delete(r, "time")
		if len(r) != len(want[i]) {
			t.Errorf("record %d: %v, want %v", i, r, want[i])
		}
		for k, v := range want[i] {
			if r[k] != v {
				t.Errorf("record %d: %s = %v, want %v", i, k, r[k], v)
			}
		}
	}
}

// The real binary, started with misspelled variables as a new user writes
// them: one WARN record each, naming the closest setting, before the service
// starts (and so before it dials anything), and no value anywhere in its
// output. It still starts and shuts down cleanly: a warning, not an error.
func TestMisspelledVariablesWarnAtStart(t *testing.T) {
	// Each value carries a marker to look for in the output.
	values := map[string]struct{ value, marker string }{
		"PUBLISHER_AMQP_URL":       {"amqp://user:pw-marker-7d3f@127.0.0.1:5672/", "marker-7d3f"},
		"PUBLISHER_CONFIRM_TIMEOT": {"3s-marker-2b9d", "marker-2b9d"},
		"PUBLISHER_ZZZ_QQQ_WWW":    {"marker-81ac", "marker-81ac"},
	}
	env := map[string]string{"PUBLISHER_AMQP_URLS": "amqp://guest:guest@" + freeAddr(t) + "/"} // refuses: no broker needed
	for k, v := range values {
		env[k] = v.value
	}
	p := startService(t, env)
	poll.Within(t, waitLimit, "the start record", func() bool { return strings.Contains(p.Logs(), `"msg":"publisher starting"`) })
	if code, err := p.Stop(waitLimit); err != nil || code != 0 {
		t.Fatalf("stop: exit %d, %v; want status 0", code, err)
	}
	out := p.Logs()
	for name, v := range values {
		if strings.Contains(out, v.marker) {
			t.Errorf("the output shows the value of %s", name)
		}
	}
	recs := logRecords(out)
	started := slices.IndexFunc(recs, func(r map[string]any) bool { return r["msg"] == "publisher starting" })
	for _, w := range []string{
		"PUBLISHER_AMQP_URL is not a setting; did you mean PUBLISHER_AMQP_URLS?",
		"PUBLISHER_CONFIRM_TIMEOT is not a setting; did you mean PUBLISHER_CONFIRM_TIMEOUT?",
		"PUBLISHER_ZZZ_QQQ_WWW is not a setting; publisher -help lists them",
	} {
		i := slices.IndexFunc(recs, func(r map[string]any) bool { return r["msg"] == w })
		switch {
		case i < 0:
			t.Errorf("no record %q", w)
		case recs[i]["level"] != "WARN":
			t.Errorf("%q logged at %v, want WARN", w, recs[i]["level"])
		case i > started:
			t.Errorf("%q logged after the service started", w)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// With an invalid configuration (here caused by the misspelling: a bound
// without a spool), the warnings come first, as plain lines like the error,
// and the exit status is still 2.
func TestMisspelledVariableWarnsBeforeAConfigError(t *testing.T) {
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "PUBLISHER_SPOOL_DIRR="+t.TempDir()+"/marker-5e0a", "PUBLISHER_SPOOL_MAX_BYTES=1000000")
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		t.Fatalf("exit = %v, want status 2; output:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	warning := "publisher: warning: PUBLISHER_SPOOL_DIRR is not a setting; did you mean PUBLISHER_SPOOL_DIR?"
	w := slices.Index(lines, warning)
	e := slices.IndexFunc(lines, func(l string) bool {
		return strings.HasPrefix(l, "publisher: invalid configuration: PUBLISHER_SPOOL_MAX_BYTES")
	})
	if w < 0 || e < 0 || w > e {
		t.Fatalf("want %q, then the error naming PUBLISHER_SPOOL_MAX_BYTES; output:\n%s", warning, out)
	}
	if bytes.Contains(out, []byte("marker-5e0a")) {
		t.Fatalf("the output shows the value of PUBLISHER_SPOOL_DIRR:\n%s", out)
	}
}

// What the configuration needs of the file system is checked once, by New,
// and is still configuration: exit status 2 naming the variable, before any
// listener (the API address here is taken, which alone would be status 1).
func TestFileSystemConfigExits2BeforeListening(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, c := range []struct{ name, value string }{
		{"PUBLISHER_AUTH_TOKEN_FILE", t.TempDir()}, // a directory
		{"PUBLISHER_SPOOL_DIR", "/proc/no-spool-here"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(binary)
			cmd.Env = append(os.Environ(), c.name+"="+c.value, "PUBLISHER_LISTEN_ADDR="+taken.Addr().String(),
				"PUBLISHER_ADMIN_ADDR="+freeAddr(t))
			cmd.WaitDelay = time.Second
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2; output:\n%s", err, out)
			}
			if !bytes.Contains(out, []byte("publisher: invalid configuration: "+c.name+": ")) {
				t.Fatalf("the message does not name %s:\n%s", c.name, out)
			}
		})
	}
}

// Only PUBLISHER_* variables configure the service: envconfig would read
// LOG_LEVEL, CHANNELS or AMQP_URLS in place of an unset PUBLISHER_ one, and a
// container's variables meant for another program would configure (or
// break) this one. They are ignored, and left in the environment.
func TestUnprefixedVariablesAreNotSettings(t *testing.T) {
	t.Setenv("CHANNELS", "not-a-number")
	t.Setenv("LOG_LEVEL", "shout")
	t.Setenv("AMQP_URLS", "amqp://other:secret@elsewhere:5672/")
	t.Setenv("PUBLISHER_BUFFER_SIZE", "7")
	t.Setenv("BUFFER_SIZE", "9")
	c, err := loadConfig()
	if err != nil {
		t.Fatalf("loadConfig with unprefixed variables set: %v", err)
	}
	if c.Channels != 1 || c.LogLevel != "info" || len(c.AMQPURLs) != 1 || strings.Contains(c.AMQPURLs[0], "elsewhere") || c.BufferSize != 7 {
		t.Fatalf("config read an unprefixed variable: channels %d, log level %q, urls %d, buffer %d", c.Channels, c.LogLevel, len(c.AMQPURLs), c.BufferSize)
	}
	if v := os.Getenv("CHANNELS"); v != "not-a-number" {
		t.Fatalf("CHANNELS is %q after loadConfig: the environment must be left as it was", v)
	}
}
