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

// docFiles are the files whose curl lines TestReadmeExamples runs: the README
// and every page of docs/, relative to the repository's root.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"README.md"}
	for _, p := range pages {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}
	return files
}

// docCommand is one curl command of a documentation file.
type docCommand struct {
	file string // relative to the repository's root
	cmd  string
}

// docCommands returns the shell commands of the sh code blocks of file (a
// path relative to root) that run curl: a command goes on over lines ending
// in "\\" or "|".
func docCommands(t *testing.T, root, file string) []docCommand {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []docCommand
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
				cmds = append(cmds, docCommand{file: file, cmd: strings.TrimSpace(cur)})
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

// Every curl line of the README and of docs/*.md works as written against the
// real binary run as `make run` runs it (the example topology, no token),
// from the repository's root: publishes are confirmed, the admin endpoints
// answer.
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
	var cmds []docCommand
	perFile := map[string]int{}
	for _, f := range docFiles(t, root) {
		c := docCommands(t, root, f)
		perFile[f] = len(c)
		cmds = append(cmds, c...)
	}
	// The README keeps a few examples; docs/http-api.md holds the API's, and
	// docs/operations.md the spool's. Fewer means the parsing broke (or the
	// examples went missing), not that every example passed.
	for f, least := range map[string]int{"README.md": 3, "docs/http-api.md": 8, "docs/operations.md": 1} {
		if perFile[f] < least {
			t.Errorf("found %d curl commands in %s, want at least %d (per file: %v)", perFile[f], f, least, perFile)
		}
	}
	t.Logf("curl commands per file: %v", perFile)
	api := regexp.MustCompile(`http://127\.0\.0\.1:8080`)
	admin := regexp.MustCompile(`http://127\.0\.0\.1:9464`)
	for _, dc := range cmds {
		c := dc.cmd
		run := api.ReplaceAllLiteralString(c, p.api)
		run = admin.ReplaceAllLiteralString(run, p.admin)
		if run == c {
			t.Errorf("%s: command names neither 127.0.0.1:8080 nor 127.0.0.1:9464: %s", dc.file, c)
			continue
		}
		cmd := exec.Command("bash", "-c", run)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("%s: %s\n  failed: %v\n%s", dc.file, c, err, out)
			continue
		}
		where := dc.file + ": " + c
		switch {
		case strings.Contains(c, "/v1/publish/"), strings.Contains(c, "/v1/batch"), strings.Contains(c, "/v1/stream"):
			checkPublishOutput(t, where, out)
		case strings.Contains(c, "/healthz"):
			if !strings.Contains(string(out), `"status":"ok"`) {
				t.Errorf("%s\n  answered %s", where, out)
			}
		case strings.Contains(c, "/debug/supervision"):
			var v struct {
				Ready bool `json:"ready"`
				Tree  struct {
					Name string `json:"name"`
				} `json:"tree"`
			}
			if err := json.Unmarshal(out, &v); err != nil || !v.Ready || v.Tree.Name != "root" {
				t.Errorf("%s\n  answered %s (%v), want the tree of a ready service", where, out, err)
			}
		case strings.Contains(c, "/readyz"):
			if !strings.Contains(string(out), `"ready":true`) {
				t.Errorf("%s\n  answered %s", where, out)
			}
		case strings.Contains(c, "/metrics"):
			if !strings.Contains(string(out), "publisher_ready 1") {
				t.Errorf("%s\n  answered no publisher_ready 1", where)
			}
		default:
			t.Errorf("%s: command of no known kind: %s", dc.file, c)
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
