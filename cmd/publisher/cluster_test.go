package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/poll"
)

// connectedNode returns the index of the node whose port /readyz names, or
// -1 while the service is not ready. The service's admin listener stays up
// through a failover: not reading /readyz fails the test.
func connectedNode(p *proc, nodes []*brokertest.Node) int {
	p.t.Helper()
	code, body := p.mustGet("/readyz")
	if code != 200 {
		return -1
	}
	for i, n := range nodes {
		if strings.Contains(body, fmt.Sprintf(":%d/", n.AMQPPort)) {
			return i
		}
	}
	return -1
}

func startClusterService(t *testing.T, nodes []*brokertest.Node, queue string, extra map[string]string) *proc {
	t.Helper()
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.URL()
	}
	topo := filepath.Join(t.TempDir(), "topology.json")
	body := fmt.Sprintf(`{"queues":[{"name":%q,"arguments":{"x-queue-type":"quorum"}}]}`, queue)
	if err := os.WriteFile(topo, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PUBLISHER_AMQP_URLS":            strings.Join(urls, ","),
		"PUBLISHER_TOPOLOGY_FILE":        topo,
		"PUBLISHER_CONFIRM_TIMEOUT":      "30s",
		"PUBLISHER_MAX_PUBLISH_ATTEMPTS": "10",
		"PUBLISHER_BACKOFF_MIN":          "50ms",
		"PUBLISHER_BACKOFF_MAX":          "1s",
	}
	for k, v := range extra {
		env[k] = v
	}
	p := startService(t, env)
	p.waitReady()
	return p
}

// Under HTTP load to a quorum queue, the node the service is connected to is
// stopped and later started again: nothing acknowledged is lost, >= 99% of
// requests succeed, and the service reconnects to another node.
func TestClusterFailoverUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes := brokertest.StartCluster(t, 3, brokertest.Options{})
	q := "svc-quorum-failover"
	p := startClusterService(t, nodes, q, nil)
	victim := connectedNode(p, nodes)
	if victim < 0 {
		t.Fatal("cannot tell which node the service is connected to")
	}
	// The two survivors must hold a majority of the queue.
	seen := ""
	poll.Within(t, waitLimit, "the quorum queue online on all three nodes", func() bool {
		members, online, err := nodes[victim].QuorumMembers(q)
		if now := fmt.Sprintf("members %v, online %v, error %v", members, online, err); now != seen {
			seen = now
			t.Logf("quorum queue %s: %s", q, now)
		}
		return err == nil && len(members) == 3 && len(online) == 3
	})
	stop := make(chan struct{})
	res := httpLoad(p, q, 16, nil, stop)
	poll.Within(t, waitLimit, "load running", func() bool { return p.metric("publisher_messages_total", `outcome="confirmed"`) > 100 })
	stopped := time.Now()
	if err := nodes[victim].Stop(); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, waitLimit, "reconnected to another node", func() bool {
		i := connectedNode(p, nodes)
		return i >= 0 && i != victim
	})
	t.Logf("reconnected to another node %s after the stop returned", time.Since(stopped).Round(time.Millisecond))
	poll.Within(t, waitLimit, "confirms after failover", func() bool {
		return p.metric("publisher_messages_total", `outcome="confirmed"`) > 1000
	})
	if err := nodes[victim].Restart(); err != nil {
		t.Fatal(err)
	}
	// Keep the load on while the node rejoins: until the quorum queue has
	// its three members online again.
	other := nodes[(victim+1)%3]
	poll.Within(t, waitLimit, "the quorum queue online on all three nodes again", func() bool {
		members, online, err := other.QuorumMembers(q)
		return err == nil && len(members) == 3 && len(online) == 3
	})
	close(stop)
	r := <-res
	t.Logf("status codes: %v", r.Outcomes)
	brokertest.CheckDelivered(t, other.URL(), q, r.Acked, r.Total)
	if n := p.metric("publisher_supervision_restarts_total", `child="publisher"`); n < 1 {
		t.Fatal("no publisher restart recorded for the failover")
	}
	if !strings.Contains(p.Logs(), "publisher connected") {
		t.Fatal("no reconnect in the logs")
	}
}

// Two of three nodes stopped: the quorum queue has no majority, so publishes
// are not confirmed (503/504, never 2xx); when a node returns, publishing
// resumes without a restart of the process.
func TestClusterNoMajorityThenRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes := brokertest.StartCluster(t, 3, brokertest.Options{})
	q := "svc-quorum-minority"
	// Only the survivor's URL: the service stays connected to it.
	p := startClusterService(t, nodes[:1], q, map[string]string{
		"PUBLISHER_CONFIRM_TIMEOUT": "3s",
		"PUBLISHER_ON_GIVE_UP":      "degrade",
	})
	for i := range 5 {
		if r, err := p.publish("amq.default", q, []byte(fmt.Sprint("before-", i)), nil); err != nil || r.code != 200 {
			t.Fatalf("publish with a majority: %+v %v", r, err)
		}
	}
	if err := nodes[1].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].Stop(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	codes := map[int]int{}
	for i := range 5 {
		r, err := p.publish("amq.default", q, []byte(fmt.Sprint("minority-", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		codes[r.code]++
		if r.code/100 == 2 {
			acked = append(acked, r.id)
		}
	}
	t.Logf("without a majority: %v", codes)
	if len(acked) != 0 {
		t.Fatalf("%d messages acknowledged without a quorum: %v", len(acked), codes)
	}
	for c := range codes {
		if c != 503 && c != 504 {
			t.Fatalf("status %d without a majority, want 503 or 504", c)
		}
	}
	if err := nodes[1].Restart(); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, waitLimit, "publishing resumes", func() bool {
		r, err := p.publish("amq.default", q, []byte("after"), nil)
		return err == nil && r.code == 200
	})
	if !p.Running() {
		t.Fatal("the process exited")
	}
	if strings.Count(p.Logs(), "publisher starting") != 1 {
		t.Fatal("the process restarted")
	}
}
