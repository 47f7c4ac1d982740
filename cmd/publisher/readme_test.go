package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/publisher-dev/publisher/internal/brokertest"
)

// readmeCommands returns the shell commands of the README's sh code blocks
// that run curl: a command goes on over lines ending in "\\" or "|".
func readmeCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	inSh := false
	cur := ""
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "```sh"):
			inSh = true
			continue
		case strings.HasPrefix(line, "```"):
			inSh = false
			continue
		case !inSh || (cur == "" && (strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#"))):
			continue
		}
		trimmed := strings.TrimRight(line, " ")
		cont := strings.HasSuffix(trimmed, "\\") || strings.HasSuffix(trimmed, "|")
		cur += " " + strings.TrimSpace(strings.TrimSuffix(trimmed, "\\"))
		if !cont {
			if strings.Contains(withoutComment(cur), "curl ") {
				cmds = append(cmds, strings.TrimSpace(cur))
			}
			cur = ""
		}
	}
	return cmds
}

// withoutComment is a shell command line without its trailing # comment
// (a '#' after a blank, outside quotes).
func withoutComment(line string) string {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return line[:i]
		}
	}
	return line
}

// Every curl line of the README works as written against the real binary run
// as `make run` runs it (the example topology, no token): publishes are
// confirmed, the admin endpoints answer.
func TestReadmeExamples(t *testing.T) {
	amqpURL := brokertest.SharedURL(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":     amqpURL,
		"PUBLISHER_TOPOLOGY_FILE": filepath.Join(root, "examples", "topology.yaml"),
	})
	p.waitReady()
	t.Cleanup(func() {
		for _, q := range []string{"orders", "my-queue"} {
			brokertest.Purge(t, amqpURL, q)
		}
	})
	cmds := readmeCommands(t)
	if len(cmds) < 5 {
		t.Fatalf("found %d curl commands in the README", len(cmds))
	}
	api := regexp.MustCompile(`http://127\.0\.0\.1:8080`)
	admin := regexp.MustCompile(`http://127\.0\.0\.1:9464`)
	for _, c := range cmds {
		run := api.ReplaceAllLiteralString(c, p.api)
		run = admin.ReplaceAllLiteralString(run, p.admin)
		if run == c {
			t.Errorf("README command names neither 127.0.0.1:8080 nor 127.0.0.1:9464: %s", c)
			continue
		}
		cmd := exec.Command("bash", "-c", run)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("%s\n  failed: %v\n%s", c, err, out)
			continue
		}
		switch {
		case strings.Contains(c, "/v1/publish/"), strings.Contains(c, "/v1/batch"), strings.Contains(c, "/v1/stream"):
			checkPublishOutput(t, c, out)
		case strings.Contains(c, "/healthz"):
			if !strings.Contains(string(out), `"status":"ok"`) {
				t.Errorf("%s\n  answered %s", c, out)
			}
		case strings.Contains(c, "/readyz"):
			if !strings.Contains(string(out), `"ready":true`) {
				t.Errorf("%s\n  answered %s", c, out)
			}
		case strings.Contains(c, "/metrics"):
			if !strings.Contains(string(out), "publisher_ready 1") {
				t.Errorf("%s\n  answered no publisher_ready 1", c)
			}
		default:
			t.Errorf("README command of no known kind: %s", c)
		}
	}
}

// checkPublishOutput checks every JSON object the command printed (one for
// a single publish or a batch, one per line for a stream): nothing but
// confirmed or spooled.
func checkPublishOutput(t *testing.T, cmd string, out []byte) {
	t.Helper()
	good := func(status any) bool {
		switch status {
		case "confirmed", "spooled", float64(200), float64(202):
			return true
		}
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	n := 0
	for dec.More() {
		var v struct {
			Status  any `json:"status"`
			Results []struct {
				Status any `json:"status"`
			} `json:"results"`
		}
		if err := dec.Decode(&v); err != nil {
			t.Errorf("%s\n  printed what is not JSON: %s", cmd, out)
			return
		}
		n++
		ok := good(v.Status)
		if v.Results != nil {
			ok = len(v.Results) > 0
			for _, r := range v.Results {
				ok = ok && good(r.Status)
			}
		}
		if !ok {
			t.Errorf("%s\n  answered %s", cmd, out)
		}
	}
	if n == 0 {
		t.Errorf("%s\n  printed nothing", cmd)
	}
}
