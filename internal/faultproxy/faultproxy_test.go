package faultproxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/faultproxy"
	"github.com/publisher-dev/publisher/internal/poll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every byte back; prefix is sent first on every connection
// so tests can tell two servers apart.
type echoServer struct {
	ln net.Listener
	wg sync.WaitGroup
	mu sync.Mutex
	cs []net.Conn
}

func newEcho(t *testing.T, prefix string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.cs = append(s.cs, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				if prefix != "" {
					if _, err := io.WriteString(c, prefix); err != nil {
						return
					}
				}
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.cs {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func newProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// roundTrip writes msg and reads back exactly len(msg) bytes.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

// waitLimit bounds the waits for the proxy's own bookkeeping, which needs no
// broker.
const waitLimit = 10 * time.Second

func TestForwarding(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())

	c := dial(t, p.Addr())
	r := bufio.NewReader(c)
	for i := 0; i < 100; i++ {
		roundTrip(t, c, r, fmt.Sprintf("message %d;", i))
	}
	// A large payload crosses many chunks and arrives intact and in order.
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i % 251)
	}
	go func() { c.Write(big) }()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != big[i] {
			t.Fatalf("byte %d = %d, want %d", i, got[i], big[i])
		}
	}
	if n := p.Connections(); n != 1 {
		t.Fatalf("Connections = %d, want 1", n)
	}
	c.Close()
	poll.Within(t, waitLimit, "connection count 0 after client close", func() bool { return p.Connections() == 0 })
}

func TestHalfClose(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p.Addr())
	io.WriteString(c, "last words")
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "last words" {
		t.Fatalf("after half-close read %q, %v", b, err)
	}
}

func TestCutAll(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())

	var conns []net.Conn
	var readers []*bufio.Reader
	for i := 0; i < 3; i++ {
		c := dial(t, p.Addr())
		r := bufio.NewReader(c)
		roundTrip(t, c, r, "hello")
		conns = append(conns, c)
		readers = append(readers, r)
	}
	if n := p.Connections(); n != 3 {
		t.Fatalf("Connections = %d, want 3", n)
	}
	p.CutAll()
	if n := p.Connections(); n != 0 {
		t.Fatalf("Connections after CutAll = %d, want 0", n)
	}
	for i, r := range readers {
		if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("conn %d: read after CutAll: %v, want EOF", i, err)
		}
	}
	// The proxy still accepts new connections.
	c := dial(t, p.Addr())
	roundTrip(t, c, bufio.NewReader(c), "again")
}

func TestRefuse(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())

	p.SetRefuse(true)
	c := dial(t, p.Addr())
	io.WriteString(c, "x") // may or may not fail
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read on refused connection succeeded")
	}
	if n := p.Connections(); n != 0 {
		t.Fatalf("Connections while refusing = %d, want 0", n)
	}

	p.SetRefuse(false)
	c = dial(t, p.Addr())
	roundTrip(t, c, bufio.NewReader(c), "accepted again")
}

func TestLatency(t *testing.T) {
	echo := newEcho(t, "")
	p := newProxy(t, echo.addr())
	const lat = 100 * time.Millisecond
	p.SetLatency(lat)

	c := dial(t, p.Addr())
	r := bufio.NewReader(c)
	start := time.Now()
	roundTrip(t, c, r, "ping")
	// Latency is added in both directions.
	if el := time.Since(start); el < 2*lat {
		t.Fatalf("round trip took %v, want >= %v", el, 2*lat)
	}
	// Many small writes arrive complete and in order despite the delay.
	var want []byte
	for i := 0; i < 200; i++ {
		s := fmt.Sprintf("%d,", i)
		want = append(want, s...)
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}

	p.SetLatency(0)
	roundTrip(t, c, r, "fast again")

	// Close while data is delayed inside the proxy must not hang.
	p.SetLatency(time.Hour)
	io.WriteString(c, "stuck")
}

func TestSetTarget(t *testing.T) {
	a := newEcho(t, "A")
	b := newEcho(t, "B")
	p := newProxy(t, a.addr())

	ca := dial(t, p.Addr())
	ra := bufio.NewReader(ca)
	if by, err := ra.ReadByte(); err != nil || by != 'A' {
		t.Fatalf("first server: %q, %v", by, err)
	}
	p.SetTarget(b.addr())
	cb := dial(t, p.Addr())
	rb := bufio.NewReader(cb)
	if by, err := rb.ReadByte(); err != nil || by != 'B' {
		t.Fatalf("second server: %q, %v", by, err)
	}
	// The existing connection still talks to A.
	roundTrip(t, ca, ra, "still A")
}

func TestUnreachableTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := newProxy(t, dead)
	c := dial(t, p.Addr())
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read through proxy to dead target succeeded")
	}
	poll.Within(t, waitLimit, "connection count 0", func() bool { return p.Connections() == 0 })
}

func TestCloseIdempotent(t *testing.T) {
	echo := newEcho(t, "")
	p, err := faultproxy.New(echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	roundTrip(t, c, bufio.NewReader(c), "x")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection survived Close")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("proxy still listening after Close")
	}
}

func TestAMQPThroughProxy(t *testing.T) {
	shared := brokertest.SharedURL(t)
	u, err := url.Parse(shared)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, u.Host)
	purl, err := p.URLFor(shared)
	if err != nil {
		t.Fatal(err)
	}
	if u.User.String() == "guest:guest" && u.Path == "/" {
		if purl != p.AMQPURL() {
			t.Fatalf("URLFor = %q, AMQPURL = %q", purl, p.AMQPURL())
		}
	}

	conn, err := amqp.Dial(purl)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", q.Name, false, false, amqp.Publishing{Body: []byte("via proxy")}); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, waitLimit, "message through proxy", func() bool {
		d, ok, err := ch.Get(q.Name, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok && string(d.Body) != "via proxy" {
			t.Fatalf("body %q", d.Body)
		}
		return ok
	})
	if n := p.Connections(); n != 1 {
		t.Fatalf("Connections = %d, want 1", n)
	}

	p.CutAll()
	select {
	case e, ok := <-closed:
		if !ok || e == nil {
			t.Fatalf("NotifyClose closed without an error (%v, %v)", e, ok)
		}
		t.Logf("NotifyClose: %v", e)
	case <-time.After(15 * time.Second):
		t.Fatal("NotifyClose did not fire after CutAll")
	}
	if !conn.IsClosed() {
		t.Fatal("connection not closed after CutAll")
	}

	// A new connection through the proxy works again.
	conn2, err := amqp.Dial(purl)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn2.Close(); err != nil {
		t.Fatal(err)
	}
}
