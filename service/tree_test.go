package service

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/httpapi"
	"github.com/publisher-dev/publisher/internal/fakeamqp"
	"github.com/publisher-dev/publisher/internal/poll"
)

// getTree reads /debug/supervision with an Accept header.
func (r *running) getTree(accept string) string {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.AdminAddr()+"/debug/supervision", nil)
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		r.t.Fatalf("/debug/supervision: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

// A dial failure whose text carries the broker's password, in the URL and
// out of it, and another URL's: the live tree shows the failure with every
// one masked, as JSON and as HTML.
func TestTreeNeverShowsAPassword(t *testing.T) {
	checkLeaks(t)
	const password, token, other = "Pa55-w0rd.xyz", "tok-en-secret", "hunter22"
	cfg := testConfig()
	cfg.AMQPURLs = []string{"amqp://app:" + password + "@broker.example:5672/vh"}
	cfg.AuthToken = token
	cfg.OnGiveUp = "degrade"
	b := &fakeamqp.Broker{}
	b.Refuse(errors.New("dial amqp://app:" + password + "@broker.example:5672/vh: refused; the password was " + password +
		", the token " + token + ", and amqps://ops:" + other + "@elsewhere/ too"))
	r := start(t, cfg, b)

	var pub httpapi.TreeNode
	poll.Within(t, 10*time.Second, "the publisher's failure on the tree", func() bool {
		var ans httpapi.TreeAnswer
		if err := json.Unmarshal([]byte(r.getTree("application/json")), &ans); err != nil {
			t.Fatal(err)
		}
		if len(ans.Tree.Children) == 0 || len(ans.Tree.Children[0].Children) == 0 {
			return false
		}
		pub = ans.Tree.Children[0].Children[0]
		return pub.LastError != ""
	})
	if pub.Name != "publisher" || !strings.Contains(pub.LastError, "amqp://app:xxxxx@broker.example:5672/vh") ||
		!strings.Contains(pub.LastError, "amqps://ops:xxxxx@elsewhere/") {
		t.Fatalf("publisher node: %+v", pub)
	}
	for _, accept := range []string{"application/json", "text/html"} {
		body := r.getTree(accept)
		for _, secret := range []string{password, token, other} {
			if strings.Contains(body, secret) {
				t.Errorf("%s: the page shows %q:\n%s", accept, secret, body)
			}
		}
		if !strings.Contains(body, "xxxxx") {
			t.Errorf("%s: no masked failure on the page:\n%s", accept, body)
		}
	}
}
