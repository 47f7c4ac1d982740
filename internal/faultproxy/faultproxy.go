// Package faultproxy is a TCP proxy for fault-injection tests: it sits between
// a client and a broker and can cut connections, refuse new ones, add latency
// and redirect new connections to another target.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	chunkSize   = 32 * 1024
	queueChunks = 64 // chunks in flight per direction when latency is set
	dialTimeout = 10 * time.Second
)

// Proxy is a TCP proxy between a client and a broker for fault injection.
// All methods are safe for concurrent use.
type Proxy struct {
	ln      net.Listener
	latency atomic.Int64 // time.Duration
	refuse  atomic.Bool
	stall   atomic.Bool
	stalled atomic.Int64 // connections accepted while stalling

	mu     sync.Mutex
	target string
	conns  map[*pair]struct{}
	closed bool

	wg sync.WaitGroup // accept loop and every connection goroutine
}

// New starts a proxy listening on 127.0.0.1:0 that forwards to target (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[*pair]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// ForURL starts a proxy in front of the host:port of rawURL (e.g. a broker's
// amqp:// URL) for the test t, and closes it when the test ends: after the
// cleanups registered later (a supervision tree or a service started behind
// it), as cleanups run last first.
func ForURL(t testing.TB, rawURL string) *Proxy {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.Port() == "" {
		t.Fatalf("faultproxy: %q: want a URL with host:port", rawURL)
	}
	p, err := New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Addr is the proxy's listening address, 127.0.0.1:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// AMQPURL is amqp://guest:guest@Addr()/.
func (p *Proxy) AMQPURL() string { return "amqp://guest:guest@" + p.Addr() + "/" }

// URLFor returns rawURL (e.g. an amqp:// URL of the target) with its host:port
// replaced by the proxy's address, keeping scheme, user info, vhost and query.
func (p *Proxy) URLFor(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	u.Host = p.Addr()
	return u.String(), nil
}

// SetLatency delays every forwarded chunk by d, in both directions. It applies
// to chunks read after the call; order is always preserved.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// SetRefuse makes the proxy accept new connections and close them at once
// (refuse=true), or forward them again (refuse=false). Existing connections
// are not affected; use CutAll for those.
func (p *Proxy) SetRefuse(refuse bool) { p.refuse.Store(refuse) }

// SetStall makes the proxy accept new connections and never answer them
// (stall=true): no byte is forwarded either way, as a load balancer in front
// of a dead broker may do; they stay open until CutAll or Close. false
// forwards new connections again. Existing connections are not affected.
func (p *Proxy) SetStall(stall bool) { p.stall.Store(stall) }

// Stalled is the number of connections accepted while stalling, since New.
func (p *Proxy) Stalled() int { return int(p.stalled.Load()) }

// SetTarget makes later connections go to target; existing ones are kept.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Connections is the number of currently open proxied connections.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// CutAll closes both sides of every current connection at once. When it
// returns, Connections() no longer counts them.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.cut()
		delete(p.conns, c)
	}
}

// Close stops listening, cuts all connections and waits for all of the
// proxy's goroutines to finish.
func (p *Proxy) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	var err error
	if !already {
		err = p.ln.Close()
	}
	p.CutAll()
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: back off briefly
			continue
		}
		if p.refuse.Load() {
			c.Close()
			continue
		}
		pr := &pair{client: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[pr] = struct{}{}
		target := p.target
		p.wg.Add(1)
		p.mu.Unlock()
		if p.stall.Load() {
			p.stalled.Add(1)
			go p.hold(pr)
			continue
		}
		go p.serve(pr, target)
	}
}

// pair is one proxied connection.
type pair struct {
	client net.Conn
	once   sync.Once
	done   chan struct{} // closed by cut

	mu     sync.Mutex
	server net.Conn
}

// cut closes both sides; safe to call many times and concurrently.
func (c *pair) cut() {
	c.once.Do(func() {
		close(c.done)
		c.client.Close()
		c.mu.Lock()
		if c.server != nil {
			c.server.Close()
		}
		c.mu.Unlock()
	})
}

func (p *Proxy) remove(c *pair) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// hold keeps a stalled connection open, unanswered, until it is cut.
func (p *Proxy) hold(c *pair) {
	defer p.wg.Done()
	defer p.remove(c)
	<-c.done
}

func (p *Proxy) serve(c *pair, target string) {
	defer p.wg.Done()
	defer p.remove(c)
	defer c.cut()

	d := net.Dialer{Timeout: dialTimeout}
	server, err := d.Dial("tcp", target)
	if err != nil {
		return
	}
	c.mu.Lock()
	c.server = server
	c.mu.Unlock()
	select {
	case <-c.done: // cut while dialing
		server.Close()
		return
	default:
	}

	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errc <- p.pipe(c, server, c.client) }()
	go func() { defer wg.Done(); errc <- p.pipe(c, c.client, server) }()
	// A failure in either direction tears down both; a clean EOF only
	// half-closes so the other direction can finish.
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			c.cut()
		}
	}
	wg.Wait()
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe forwards src to dst, delaying every chunk by the latency current at
// the time it was read. It returns nil after a clean EOF (and half-closes
// dst), or the first error.
func (p *Proxy) pipe(c *pair, dst, src net.Conn) error {
	ch := make(chan chunk, queueChunks)
	readErr := make(chan error, 1)
	go func() { // reader; ends when src fails or is closed by cut
		defer close(ch)
		for {
			buf := make([]byte, chunkSize)
			n, err := src.Read(buf)
			if n > 0 {
				ck := chunk{data: buf[:n]}
				if l := time.Duration(p.latency.Load()); l > 0 {
					ck.due = time.Now().Add(l)
				}
				select {
				case ch <- ck:
				case <-c.done:
					readErr <- net.ErrClosed
					return
				}
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()

	var werr error
	var timer *time.Timer
	for ck := range ch {
		if werr != nil {
			continue // drain so the reader can finish
		}
		if wait := time.Until(ck.due); !ck.due.IsZero() && wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-c.done:
				werr = net.ErrClosed
				continue
			}
		}
		if _, err := dst.Write(ck.data); err != nil {
			werr = err
			c.cut() // unblocks the reader
		}
	}
	if timer != nil {
		timer.Stop()
	}
	rerr := <-readErr
	if werr != nil {
		return werr
	}
	if errors.Is(rerr, io.EOF) {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			if cw.CloseWrite() == nil {
				return nil
			}
		}
	}
	return rerr
}

// CutEvery calls CutAll every interval, times times, in the background; the
// returned channel is closed after the last cut.
func (p *Proxy) CutEvery(every time.Duration, times int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for range times {
			<-tick.C
			p.CutAll()
		}
	}()
	return done
}
