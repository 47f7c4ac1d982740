package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/publisher-dev/publisher/httpapi"
	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
)

// tree reads /debug/supervision as JSON.
func (p *proc) tree() httpapi.TreeAnswer {
	p.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.admin+"/debug/supervision", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans httpapi.TreeAnswer
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		p.t.Fatalf("/debug/supervision: %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		p.t.Fatalf("/debug/supervision: %v: %s", err, b)
	}
	return ans
}

// node returns the tree's node at path (names from the root's children
// down), failing the test when there is none.
func node(t *testing.T, ans httpapi.TreeAnswer, path ...string) httpapi.TreeNode {
	t.Helper()
	n := ans.Tree
next:
	for _, name := range path {
		for _, c := range n.Children {
			if c.Name == name {
				n = c
				continue next
			}
		}
		t.Fatalf("no %v in the tree %+v", path, ans.Tree)
	}
	return n
}

// cutOnce starts the service behind a proxy to the shared broker, waits for
// it to be ready, cuts the broker connection once and waits until the tree
// shows the publisher restarted, running again, and the service ready. It
// returns the publisher's node then.
func cutOnce(t *testing.T) (*proc, *faultproxy.Proxy, httpapi.TreeNode) {
	t.Helper()
	amqpURL := brokertest.SharedURL(t)
	proxy := faultproxy.ForURL(t, amqpURL)
	target, err := proxy.URLFor(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": target, "PUBLISHER_LOG_LEVEL": "info"})
	p.waitReady()

	before := p.tree()
	if pub := node(t, before, "broker", "publisher"); pub.State != "running" || pub.Stats == nil || pub.Stats.TotalRestarts != 0 || pub.LastError != "" {
		t.Fatalf("before the cut, the publisher: %+v", pub)
	}
	if !before.Ready || before.Service["connected"] != true || before.Tree.State != "running" {
		t.Fatalf("before the cut: ready %v, service %v, root %v", before.Ready, before.Service, before.Tree.State)
	}

	proxy.CutAll()
	var pub httpapi.TreeNode
	poll.Within(t, waitLimit, "the publisher restarted and the service ready again", func() bool {
		ans := p.tree()
		pub = node(t, ans, "broker", "publisher")
		return ans.Ready && pub.State == "running" && pub.Stats.TotalRestarts >= 1
	})
	return p, proxy, pub
}

// After a cut of the broker connection, the JSON of the real binary shows
// the publisher's restart and its last failure, the broker supervisor and
// the root untouched.
func TestTreeJSONAfterCut(t *testing.T) {
	p, _, pub := cutOnce(t)
	st := pub.Stats
	if st.TotalRestarts != 1 || st.FailuresInWindow != 1 || st.LastFailure == nil || pub.LastError == "" || pub.NextRestart != nil || pub.Restart != "permanent" {
		t.Fatalf("after one cut, the publisher: %+v, stats %+v", pub, *st)
	}
	if strings.Contains(pub.LastError, ":guest@") {
		t.Fatalf("the last failure shows a password: %q", pub.LastError)
	}
	ans := p.tree()
	broker := node(t, ans, "broker")
	if broker.State != "running" || broker.Strategy != "one-for-one" || broker.Stats.TotalRestarts != 0 || broker.LastError != "" {
		t.Fatalf("the broker supervisor after a cut of its publisher: %+v", broker)
	}
	if h := node(t, ans, "http"); h.State != "running" || h.Stats.TotalRestarts != 0 {
		t.Fatalf("http: %+v", h)
	}
	// The failure on the tree is the one the log reports.
	quoted, _ := json.Marshal(pub.LastError) // the log is JSON
	if logs := p.Logs(); !strings.Contains(logs, pub.LastError) && !strings.Contains(logs, string(quoted[1:len(quoted)-1])) {
		t.Errorf("the log does not report the failure %q the tree shows:\n%s", pub.LastError, p.LogTail(4000))
	}
	t.Logf("publisher after the cut: %d restart, last failure %q", st.TotalRestarts, pub.LastError)
}

// chromium starts headless Chromium (Debian's package) for the test and
// returns a chromedp context on it. Under CI a missing Chromium fails the
// test (scripts/ensure-deps.sh installs it).
func chromium(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if v := strings.ToLower(os.Getenv("CI")); v != "" && v != "0" && v != "false" {
			t.Fatal("chromium not installed (scripts/ensure-deps.sh installs it)")
		}
		t.Skip("chromium not installed")
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // as root in a container
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// No network but the service: without these Chromium calls home.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("safebrowsing-disable-auto-update", true),
		chromedp.UserDataDir(t.TempDir()), // a fresh profile
		chromedp.WindowSize(1000, 640),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		if err := chromedp.Cancel(ctx); err != nil {
			t.Logf("closing chromium: %v", err)
		}
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser, without a timeout (see chromedp.Run)
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// pageText loads the admin page in the browser and returns its visible text.
func pageText(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitReady("ul.tree")); err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}
	// NodeReady: chromedp v0.23.1's default wait for visibility never ends
	// on this page; it does once the page's body style rule is removed.
	text, err := chromedp.Run(ctx, chromedp.Text("body", chromedp.NodeReady))
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// The page as Chromium shows it: after a cut, the publisher's restart and
// its last failure; with the broker refusing, the publisher restarting and
// the service not ready. The screenshot of that is saved in the test's
// artifact directory and, when PUBLISHER_TEST_SCREENSHOT names a file
// (docs/img/supervision-tree.png for the README), there too.
func TestTreePageInChromium(t *testing.T) {
	ctx := chromium(t)
	p, proxy, pub := cutOnce(t)
	page := p.admin + "/debug/supervision"

	text := pageText(t, ctx, page)
	for _, want := range []string{"publisher", "broker", "root", "http", "Ready", "restarts 1", "last failure: " + pub.LastError} {
		if !strings.Contains(text, want) {
			t.Errorf("the page lacks %q; it reads:\n%s", want, text)
		}
	}

	// The broker away: the proxy refuses every connection.
	proxy.SetRefuse(true)
	proxy.CutAll()
	poll.Within(t, waitLimit, "the publisher failing without progress", func() bool {
		ans := p.tree()
		pub = node(t, ans, "broker", "publisher")
		return !ans.Ready && pub.Stats.FailuresInWindow >= 2 && pub.State == "restarting"
	})
	text = pageText(t, ctx, page)
	for _, want := range []string{"Not ready", "publisher", "failures in window", "last failure: "} {
		if !strings.Contains(text, want) {
			t.Errorf("with the broker refusing, the page lacks %q; it reads:\n%s", want, text)
		}
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dirs := []string{filepath.Join(t.ArtifactDir(), "supervision-tree.png")}
	if f := os.Getenv("PUBLISHER_TEST_SCREENSHOT"); f != "" {
		dirs = append(dirs, f)
	}
	for _, f := range dirs {
		if err := os.WriteFile(f, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", f)
	}
	proxy.SetRefuse(false)
}
