package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// service is the publisher binary running as a child process.
type service struct {
	cmd       *exec.Cmd
	name      string // for messages: "service" or "spooled service"
	bin       string
	dir       string // temporary: the binary (when built here) and the log
	spoolDir  string // temporary PUBLISHER_SPOOL_DIR; empty without a spool
	logPath   string
	apiAddr   string
	adminAddr string
	exited    chan struct{}
	waitErr   error
}

// freeLoopbackAddr returns 127.0.0.1:PORT with a port that was free a moment
// ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// serviceOpts are what differs between the service children.
type serviceOpts struct {
	name string
	bin  string // a binary built already; empty: cfg.serviceBin, or build one
	// spoolParent, when not empty, gives the service a durable spool in a new
	// temporary directory under it (removed by stop)
	spoolParent string
}

// startService builds the service (unless a binary is given), starts it on
// free loopback ports against amqpURL and waits until /readyz answers 200.
func startService(ctx context.Context, cfg *config, opts serviceOpts) (*service, error) {
	dir, err := os.MkdirTemp("", "pubbench-")
	if err != nil {
		return nil, err
	}
	s := &service{name: opts.name, dir: dir, logPath: filepath.Join(dir, "publisher.log"), exited: make(chan struct{})}
	if s.name == "" {
		s.name = "service"
	}
	bin := opts.bin
	if bin == "" {
		bin = cfg.serviceBin
	}
	if bin == "" {
		bin = filepath.Join(dir, "publisher")
		logf("building %s", cfg.servicePkg)
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, cfg.servicePkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("go build %s: %w", cfg.servicePkg, err)
		}
	}
	s.bin = bin
	if opts.spoolParent != "" {
		if s.spoolDir, err = os.MkdirTemp(opts.spoolParent, "pubbench-spool-"); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("spool directory: %w", err)
		}
	}
	if s.apiAddr, err = freeLoopbackAddr(); err != nil {
		s.removeDirs()
		return nil, err
	}
	if s.adminAddr, err = freeLoopbackAddr(); err != nil {
		s.removeDirs()
		return nil, err
	}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		s.removeDirs()
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PUBLISHER_") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"PUBLISHER_AMQP_URLS="+cfg.amqpURL,
		"PUBLISHER_LISTEN_ADDR="+s.apiAddr,
		"PUBLISHER_ADMIN_ADDR="+s.adminAddr,
		"PUBLISHER_LOG_LEVEL=warn",
		"PUBLISHER_BUFFER_SIZE="+strconv.Itoa(cfg.serviceBuffer),
		// the memory measurement holds messages behind a broker alarm for a while
		"PUBLISHER_CONFIRM_TIMEOUT="+cfg.serviceConfirmTimeout.String(),
	)
	if cfg.serviceGOMAXPROCS > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(cfg.serviceGOMAXPROCS))
	}
	if cfg.serviceChannels > 0 {
		env = append(env, "PUBLISHER_CHANNELS="+strconv.Itoa(cfg.serviceChannels))
	}
	env = append(env, cfg.serviceEnv...)
	if s.spoolDir != "" {
		// after -service-env: the spooled service always has its own fresh spool
		env = append(env, "PUBLISHER_SPOOL_DIR="+s.spoolDir)
		if cfg.spoolMaxBytes > 0 {
			env = append(env, "PUBLISHER_SPOOL_MAX_BYTES="+strconv.FormatInt(cfg.spoolMaxBytes, 10))
		}
	}
	s.cmd = exec.Command(bin)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// the child must not outlive pubbench, even when pubbench is killed
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.removeDirs()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { s.waitErr = s.cmd.Wait(); close(s.exited) }()
	if s.spoolDir != "" {
		logf("%s pid %d: api %s, admin %s, spool %s", s.name, s.cmd.Process.Pid, s.apiAddr, s.adminAddr, s.spoolDir)
	} else {
		logf("%s pid %d: api %s, admin %s", s.name, s.cmd.Process.Pid, s.apiAddr, s.adminAddr)
	}
	if err := s.waitReady(ctx, 30*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls /readyz until it answers 200.
func (s *service) waitReady(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get("http://" + s.adminAddr + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before it was ready (%v); log:\n%s", s.name, s.waitErr, s.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s; log:\n%s", s.name, timeout, s.logTail())
		}
	}
}

func (s *service) pid() int { return s.cmd.Process.Pid }

// alive reports whether the child is still running.
func (s *service) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// logTail returns the end of the service's log.
func (s *service) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// removeDirs removes the temporary directory and the spool directory.
func (s *service) removeDirs() {
	os.RemoveAll(s.dir)
	if s.spoolDir != "" {
		os.RemoveAll(s.spoolDir)
	}
}

// stop sends SIGTERM, waits up to 20 s, kills when needed and removes the
// temporary directories (the spool's too).
func (s *service) stop() {
	defer s.removeDirs()
	if !s.alive() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		logf("%s did not stop within 20s of SIGTERM; killing it", s.name)
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	var ee *exec.ExitError
	if s.waitErr != nil && !errors.As(s.waitErr, &ee) {
		logf("%s: %v", s.name, s.waitErr)
	}
}

// procCPU returns the user+system CPU seconds of pid ("self" for this
// process).
func procCPU(pid string) (float64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	t, err := parseProcStatCPU(string(b))
	if err != nil {
		return 0, err
	}
	return ticksToSeconds(t), nil
}

// procRSS returns VmRSS of pid in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// scrape reads the named metrics (each summed over its series) from the
// service's /metrics; a metric without samples is missing from the map.
func (s *service) scrape(client *http.Client, names ...string) (map[string]float64, error) {
	resp, err := client.Get("http://" + s.adminAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: HTTP %d", s.name, resp.StatusCode)
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(names))
	// one pass per name keeps sumMetric simple; /metrics is small
	for _, n := range names {
		v, found, err := sumMetric(bytes.NewReader(buf), n)
		if err != nil {
			return nil, err
		}
		if found {
			out[n] = v // a metric without samples is left out
		}
	}
	return out, nil
}

// isTmpfs reports whether dir is on a tmpfs (where fsync costs nothing, so a
// spool measured there would flatter the service).
func isTmpfs(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	const tmpfsMagic = 0x01021994
	return st.Type == tmpfsMagic
}
