package brokertest

import ("testing";"time";"os")

func TestScratch(t *testing.T) {
	t0 := time.Now()
	n := Start(t, Options{})
	t.Logf("start %v", time.Since(t0)); t0 = time.Now()
	pid, _ := n.pid()
	t.Logf("isNodeProcess %v %v", isNodeProcess(pid, n.Name), isNodeProcess(pid, "bt1@localhost"))
	b, _ := os.ReadFile("/proc/1/stat"); t.Logf("%s", b[:40])
	if err := n.Stop(); err != nil { t.Fatal(err) }
	t.Logf("stop %v", time.Since(t0)); t0 = time.Now()
	if err := n.Restart(); err != nil { t.Fatal(err) }
	t.Logf("restart %v", time.Since(t0)); t0 = time.Now()
	n.cleanup(t)
	t.Logf("cleanup %v", time.Since(t0)); t0 = time.Now()
}
