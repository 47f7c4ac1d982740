// Package brokertest starts private RabbitMQ nodes for tests and offers small
// helpers around them and the machine's shared broker.
//
// A Node runs the system's rabbitmq-server (as user rabbitmq, which the
// server script switches to when run as root) on free loopback ports, with
// all of its state in a temporary directory, and never touches the shared
// broker (rabbit@localhost, ports 5672/25672).
package brokertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	startTimeout = 60 * time.Second
	stopTimeout  = 60 * time.Second
	ctlTimeout   = 90 * time.Second
	pollInterval = 100 * time.Millisecond
	dirPrefix    = "brokertest-"
)

// Options configure a private node.
type Options struct {
	// Management enables rabbitmq_management on Node.MgmtPort.
	Management bool
	// ExtraConfig is appended to the node's rabbitmq.conf (sysctl format).
	ExtraConfig string
	// TLS adds a TLS listener on Node.TLS.Port; nil: none.
	TLS *TLSOptions
}

// Node is a private RabbitMQ node on free loopback ports, with its state in a
// temporary directory owned by the rabbitmq user.
type Node struct {
	Name     string // e.g. bt1234x1@localhost
	AMQPPort int
	DistPort int
	MgmtPort int    // 0 unless Options.Management
	Dir      string // config, mnesia, log, pid file; removed at cleanup
	// TLS is the TLS listener, its CA and the CA's file; nil unless
	// Options.TLS.
	TLS *NodeTLS

	opts    Options
	env     []string
	tlsPort int
}

var nodeCounter atomic.Int64

// Installed reports whether rabbitmq-server and rabbitmqctl are on PATH.
func Installed() bool {
	_, err1 := exec.LookPath("rabbitmq-server")
	_, err2 := exec.LookPath("rabbitmqctl")
	return err1 == nil && err2 == nil
}

func inCI() bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv("CI")))
	return v != "" && v != "0" && v != "false"
}

// unavailable fails the test under CI or when RabbitMQ is installed (so that
// a broken setup is noticed), and skips it only when rabbitmq-server is not
// installed outside CI.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if inCI() || Installed() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format+" (rabbitmq-server not installed; skipping)", args...)
}

// Start starts a private node, waits until it accepts AMQP connections (and,
// with Management, HTTP requests) and registers a cleanup that stops it
// (killing it if need be) and removes its directory.
func Start(t testing.TB, opts Options) *Node {
	t.Helper()
	if !Installed() {
		unavailable(t, "brokertest: rabbitmq-server/rabbitmqctl not on PATH")
	}
	reapStale()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		n, err := newNode(t, opts)
		if err != nil {
			unavailable(t, "brokertest: %v", err)
		}
		if lastErr = n.boot(); lastErr == nil {
			return n
		}
		// A port picked as free may have been taken before the node bound it.
		if !strings.Contains(lastErr.Error(), "eaddrinuse") {
			break
		}
		n.cleanup(t)
	}
	unavailable(t, "brokertest: %v", lastErr)
	return nil
}

// StartCluster starts n nodes concurrently and joins nodes[1:] to nodes[0]
// (stop_app, join_cluster, start_app). All nodes share the rabbitmq user's
// Erlang cookie.
func StartCluster(t testing.TB, n int, opts Options) []*Node {
	t.Helper()
	if n < 1 {
		t.Fatalf("brokertest: StartCluster(%d)", n)
	}
	if !Installed() {
		unavailable(t, "brokertest: rabbitmq-server/rabbitmqctl not on PATH")
	}
	reapStale()
	nodes := make([]*Node, n)
	for i := range nodes {
		nd, err := newNode(t, opts)
		if err != nil {
			unavailable(t, "brokertest: %v", err)
		}
		nodes[i] = nd
	}
	// Stop all nodes concurrently at cleanup (runs before the per-node
	// cleanups, which then only remove the directories).
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); nd.halt() }()
		}
		wg.Wait()
	})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = nd.boot() }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		unavailable(t, "brokertest: cluster: %v", err)
	}
	for _, nd := range nodes[1:] {
		if err := nd.StopApp(); err != nil {
			t.Fatalf("brokertest: cluster: %v", err)
		}
		if _, err := nd.Ctl("join_cluster", nodes[0].Name); err != nil {
			t.Fatalf("brokertest: cluster: %v\n%s", err, nd.LogTail(40))
		}
		if err := nd.StartApp(); err != nil {
			t.Fatalf("brokertest: cluster: %v", err)
		}
	}
	return nodes
}

func newNode(t testing.TB, opts Options) (*Node, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("bt%dx%d", os.Getpid(), nodeCounter.Add(1))
	dir, err := os.MkdirTemp("", dirPrefix+name+"-")
	if err != nil {
		return nil, err
	}
	n := &Node{
		Name:     name + "@localhost",
		AMQPPort: ports[0],
		DistPort: ports[1],
		Dir:      dir,
		opts:     opts,
	}
	if opts.Management {
		n.MgmtPort = ports[2]
	}
	if opts.TLS != nil {
		n.tlsPort = ports[3]
	}
	t.Cleanup(func() { n.cleanup(t) })
	if err := n.writeFiles(); err != nil {
		return nil, err
	}
	return n, nil
}

// freePorts returns k distinct free loopback TCP ports, avoiding the shared
// broker's ports.
func freePorts(k int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for len(ports) < k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a free port: %w", err)
		}
		ls = append(ls, l)
		p := l.Addr().(*net.TCPAddr).Port
		switch p {
		case 5672, 25672, 4369, 15672:
			continue
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func (n *Node) path(elem ...string) string {
	return filepath.Join(append([]string{n.Dir}, elem...)...)
}

func (n *Node) pidFile() string { return n.path("pid") }

// LogFile is the node's main log file.
func (n *Node) LogFile() string { return n.path("log", "node.log") }

func (n *Node) writeFiles() error {
	var conf strings.Builder
	fmt.Fprintf(&conf, "listeners.tcp.local = 127.0.0.1:%d\n", n.AMQPPort)
	conf.WriteString("log.file.level = info\nlog.console = false\n")
	var plugins []string
	if n.opts.Management {
		fmt.Fprintf(&conf, "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %d\n", n.MgmtPort)
		plugins = append(plugins, "rabbitmq_management")
	}
	if n.opts.TLS != nil {
		tlsConf, err := n.writeTLSFiles()
		if err != nil {
			return err
		}
		conf.WriteString(tlsConf)
		if n.opts.TLS.External {
			plugins = append(plugins, "rabbitmq_auth_mechanism_ssl")
		}
	}
	if n.opts.ExtraConfig != "" {
		conf.WriteString(strings.TrimRight(n.opts.ExtraConfig, "\n") + "\n")
	}
	// Our own env file instead of /etc/rabbitmq/rabbitmq-env.conf (which may
	// set NODENAME): keep epmd and Erlang distribution on loopback.
	envConf := "ERL_EPMD_ADDRESS=127.0.0.1\n" +
		"export ERL_FLAGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"\n"
	files := map[string]string{
		"rabbitmq.conf":     conf.String(),
		"rabbitmq-env.conf": envConf,
		"enabled_plugins":   "[" + strings.Join(plugins, ",") + "].\n",
	}
	for f, content := range files {
		if err := os.WriteFile(n.path(f), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, d := range []string{"mnesia", "log"} {
		if err := os.Mkdir(n.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := chownRabbitmq(n.Dir); err != nil {
		return err
	}

	env := make([]string, 0, len(os.Environ())+16)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "RABBITMQ_") || strings.HasPrefix(kv, "ERL_") {
			continue
		}
		env = append(env, kv)
	}
	n.env = append(env,
		"RABBITMQ_NODENAME="+n.Name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(n.AMQPPort),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.DistPort),
		"RABBITMQ_CONF_ENV_FILE="+n.path("rabbitmq-env.conf"),
		"RABBITMQ_CONFIG_FILE="+n.path("rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+n.path("advanced.config"),
		"RABBITMQ_MNESIA_BASE="+n.path("mnesia"),
		"RABBITMQ_LOG_BASE="+n.path("log"),
		"RABBITMQ_LOGS="+n.LogFile(),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+n.path("enabled_plugins"),
		"RABBITMQ_PID_FILE="+n.pidFile(),
	)
	return nil
}

// chownRabbitmq gives dir and everything below it to user rabbitmq when we
// run as root (the server script then runs the node as that user).
func chownRabbitmq(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return fmt.Errorf("looking up user rabbitmq: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// boot runs rabbitmq-server -detached and waits until the node is up.
func (n *Node) boot() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rabbitmq-server", "-detached")
	cmd.Env = n.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("node %s: rabbitmq-server -detached: %v\n%s\n%s", n.Name, err, out, n.LogTail(40))
	}
	if err := n.waitUp(); err != nil {
		msg := strings.TrimSpace(string(out))
		if msg != "" {
			msg = "\nrabbitmq-server output: " + msg
		}
		return fmt.Errorf("node %s: %v%s\n%s", n.Name, err, msg, n.LogTail(40))
	}
	return nil
}

// waitUp polls until AMQP (and management, if enabled) accepts, failing early
// when the node's process has died.
func (n *Node) waitUp() error {
	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for {
		lastErr = n.dialOnce()
		if lastErr == nil {
			break
		}
		if pid, err := n.pid(); err == nil && !alive(pid) {
			// The process may have died before the pid file was rewritten;
			// re-read once to avoid acting on a stale file.
			if pid2, err := n.pid(); err == nil && pid2 == pid {
				return fmt.Errorf("node process %d exited during startup (last dial error: %v)", pid, lastErr)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("AMQP not accepting on %s after %v: %v", n.Addr(), startTimeout, lastErr)
		}
		time.Sleep(pollInterval)
	}
	if n.TLS != nil {
		// The TLS listener starts with the TCP one; a connect is enough to
		// tell it listens (a handshake may need a client certificate).
		for {
			c, err := net.DialTimeout("tcp", n.TLS.Addr(), 2*time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("TLS listener not accepting on %s after %v: %v", n.TLS.Addr(), startTimeout, err)
			}
			time.Sleep(pollInterval)
		}
	}
	if !n.opts.Management {
		return nil
	}
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequest("GET", n.MgmtURL()+"api/overview", nil)
		req.SetBasicAuth("guest", "guest")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			client.CloseIdleConnections()
			return fmt.Errorf("management not ready on %s: %v", n.MgmtURL(), err)
		}
		time.Sleep(pollInterval)
	}
}

func (n *Node) dialOnce() error {
	c, err := amqp.DialConfig(n.URL(), amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return err
	}
	return c.Close()
}

// pid reads the node's OS process id from its pid file.
func (n *Node) pid() (int, error) {
	b, err := os.ReadFile(n.pidFile())
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// alive reports whether pid is a running (non-zombie) process.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// Format: pid (comm) state ...; comm may contain spaces.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

func waitDead(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
	return true
}

// URL is amqp://guest:guest@127.0.0.1:<AMQPPort>/.
func (n *Node) URL() string { return "amqp://guest:guest@" + n.Addr() + "/" }

// Addr is 127.0.0.1:<AMQPPort>.
func (n *Node) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.AMQPPort)) }

// MgmtURL is http://127.0.0.1:<MgmtPort>/, or "" without Management.
func (n *Node) MgmtURL() string {
	if n.MgmtPort == 0 {
		return ""
	}
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(n.MgmtPort)) + "/"
}

// Ctl runs rabbitmqctl -n Name args... and returns its trimmed combined output.
func (n *Node) Ctl(args ...string) (string, error) {
	return n.ctl(strings.Join(args, " "), args...)
}

// ClientUsers lists "user mechanism" (e.g. "tls-user EXTERNAL") of the
// node's client connections, sorted, leaving out user guest's (a test's own
// connections, over the plain listener).
func (n *Node) ClientUsers(t testing.TB) []string {
	t.Helper()
	out, err := n.Ctl("list_connections", "-q", "--no-table-headers", "user", "auth_mechanism")
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] != "guest" {
			users = append(users, f[0]+" "+f[1])
		}
	}
	slices.Sort(users)
	return users
}

// ReplaceFile writes data to path as a Secret volume or a certificate
// manager does: a new file (mode 0600) renamed over the old one.
func ReplaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// ctl is Ctl with shown, instead of the arguments, in its error (a command
// that takes a password shows it masked).
func (n *Node) ctl(shown string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-n", n.Name}, args...)...)
	cmd.Env = n.env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("rabbitmqctl -n %s %s: %v: %s", n.Name, shown, err, s)
	}
	return s, nil
}

// Stop stops the whole node (rabbitmqctl stop) and waits until its process
// has exited and the AMQP port is closed. Data is kept for Restart.
func (n *Node) Stop() error {
	pid, pidErr := n.pid()
	args := []string{"stop"}
	if pidErr == nil {
		args = append(args, n.pidFile())
	}
	if _, err := n.Ctl(args...); err != nil {
		return err
	}
	if pidErr == nil && !waitDead(pid, stopTimeout) {
		return fmt.Errorf("node %s: process %d still running %v after stop", n.Name, pid, stopTimeout)
	}
	deadline := time.Now().Add(stopTimeout)
	for {
		c, err := net.DialTimeout("tcp", n.Addr(), time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: AMQP port %d still open after stop", n.Name, n.AMQPPort)
		}
		time.Sleep(pollInterval)
	}
}

// Restart starts the node again with the same environment and data
// directory, and waits until it accepts AMQP connections.
func (n *Node) Restart() error { return n.boot() }

// StopApp stops the RabbitMQ application (the Erlang node keeps running).
func (n *Node) StopApp() error {
	_, err := n.Ctl("stop_app")
	return err
}

// StartApp starts the RabbitMQ application and waits until AMQP accepts.
func (n *Node) StartApp() error {
	if _, err := n.Ctl("start_app"); err != nil {
		return err
	}
	if err := n.waitUp(); err != nil {
		return fmt.Errorf("node %s: %v\n%s", n.Name, err, n.LogTail(40))
	}
	return nil
}

// SetMemoryAlarm sets vm_memory_high_watermark to 0.000001 (on) or 0.4 (off)
// and waits until the node's memory alarm is raised or cleared accordingly.
func (n *Node) SetMemoryAlarm(on bool) error {
	wm := "0.4"
	if on {
		wm = "0.000001"
	}
	if _, err := n.Ctl("set_vm_memory_high_watermark", wm); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := n.Ctl("eval", "rabbit_alarm:get_alarms().")
		if err != nil {
			return err
		}
		if strings.Contains(out, "memory") == on {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: memory alarm not %v after 30s: %s", n.Name, on, out)
		}
		time.Sleep(pollInterval)
	}
}

// CloseAllConnections closes every client connection on the node.
func (n *Node) CloseAllConnections(reason string) error {
	_, err := n.Ctl("close_all_connections", reason)
	return err
}

// RunningNodes lists the cluster members running as seen from this node.
func (n *Node) RunningNodes() ([]string, error) {
	out, err := n.Ctl("eval", "io:format(\"~s~n\", [string:join([atom_to_list(N) || N <- rabbit_nodes:all_running()], \",\")]).")
	if err != nil {
		return nil, err
	}
	line := strings.SplitN(out, "\n", 2)[0]
	return strings.Split(strings.TrimSpace(line), ","), nil
}

// QuorumMembers returns the members of the quorum queue and those of them
// online, as this node sees them. A quorum queue takes its members when it is
// declared, so a test that stops one node should first check that the queue
// lives on all of them (else the survivors may hold no majority).
func (n *Node) QuorumMembers(queue string) (members, online []string, err error) {
	out, err := n.Ctl("list_queues", "-q", "name", "members", "online", "--formatter", "json")
	if err != nil {
		return nil, nil, err
	}
	var qs []struct {
		Name    string   `json:"name"`
		Members []string `json:"members"`
		Online  []string `json:"online"`
	}
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		return nil, nil, fmt.Errorf("brokertest: list_queues on %s: %w: %s", n.Name, err, out)
	}
	for _, q := range qs {
		if q.Name == queue {
			return q.Members, q.Online, nil
		}
	}
	return nil, nil, fmt.Errorf("brokertest: no queue %q on %s", queue, n.Name)
}

// LogTail returns the last lines of the node's log (for error messages).
func (n *Node) LogTail(lines int) string {
	return n.logTail(lines, false)
}

// stopMarkers begin RabbitMQ's log of a stop (rabbitmqctl stop, SIGTERM);
// what follows is the same list of applications stopping every time.
var stopMarkers = []string{"RabbitMQ is asked to stop", "Stopping RabbitMQ applications and their dependencies"}

// logTail is LogTail; beforeStop ends it where the node's last stop began,
// so that a node stopped by the test's cleanup still shows what it said
// while the test ran.
func (n *Node) logTail(lines int, beforeStop bool) string {
	b, err := os.ReadFile(n.LogFile())
	if err != nil {
		return fmt.Sprintf("(no log %s: %v)", n.LogFile(), err)
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	what := "tail of "
	if beforeStop {
	search:
		for i := len(ls) - 1; i >= 0; i-- {
			for _, m := range stopMarkers {
				if strings.Contains(ls[i], m) {
					ls, what = ls[:i], "tail, before its last stop, of "
					break search
				}
			}
		}
	}
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return "--- " + what + n.LogFile() + " ---\n" + strings.Join(ls, "\n")
}

// halt stops the node if it is running: rabbitmqctl stop, then SIGKILL if it
// did not exit.
func (n *Node) halt() {
	pid, err := n.pid()
	if err != nil || !alive(pid) {
		return
	}
	if err := n.Stop(); err == nil {
		return
	}
	if alive(pid) && isNodeProcess(pid, n.Name) {
		syscall.Kill(pid, syscall.SIGKILL)
		waitDead(pid, 10*time.Second)
	}
}

func (n *Node) cleanup(t testing.TB) {
	if t.Failed() {
		// The directory goes away below: keep what the node said.
		t.Logf("brokertest: node %s after the failure:\n%s", n.Name, n.logTail(60, true))
	}
	n.halt()
	if pid, err := n.pid(); err == nil && alive(pid) {
		t.Errorf("brokertest: node %s (pid %d) still running; leaving %s", n.Name, pid, n.Dir)
		return
	}
	os.RemoveAll(n.Dir)
}

// isNodeProcess checks that pid is the named node's beam (its environment
// carries RABBITMQ_NODENAME), so that a stale pid file never makes us kill an
// unrelated process.
func isNodeProcess(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	return bytes.Contains(append([]byte{0}, b...), []byte("\x00RABBITMQ_NODENAME="+name+"\x00"))
}

var reapOnce sync.Once

// reapStale kills nodes and removes directories left behind by test
// processes that no longer exist (e.g. killed by go test -timeout).
func reapStale() {
	reapOnce.Do(func() {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"bt*"))
		for _, d := range dirs {
			base := strings.TrimPrefix(filepath.Base(d), dirPrefix+"bt")
			owner, rest, ok := strings.Cut(base, "x")
			if !ok {
				continue
			}
			opid, err := strconv.Atoi(owner)
			if err != nil || opid == os.Getpid() || alive(opid) {
				continue
			}
			counter, _, _ := strings.Cut(rest, "-")
			name := "bt" + owner + "x" + counter + "@localhost"
			if b, err := os.ReadFile(filepath.Join(d, "pid")); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && alive(pid) && isNodeProcess(pid, name) {
					syscall.Kill(pid, syscall.SIGKILL)
					waitDead(pid, 10*time.Second)
				}
			}
			os.RemoveAll(d)
		}
	})
}
