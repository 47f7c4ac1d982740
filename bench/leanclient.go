package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"
)

// leanConn is a minimal HTTP/1.1 keep-alive client for one connection: it
// sends one prepared request again and again and reads the answers. It exists
// because the load generator shares the machine's two cores with the service
// and the broker: net/http's client spends about 50 µs of CPU per request
// here (its transport runs two goroutines per connection and allocates a
// request, a response and their headers each time), CPU taken from the system
// under test. leanConn spends a write and a read syscall. Mode service can use
// either (-http-client); the report says which one ran.
//
// It understands exactly what the service answers: a status line, headers
// with a Content-Length (or "Transfer-Encoding: chunked", after which the
// connection is closed), and "Connection: close". Anything else is
// an error, and the connection is dialled again for the next request.
type leanConn struct {
	addr string
	req  []byte // the whole request, body included
	conn net.Conn
	br   *bufio.Reader
	body []byte // the last answer's body, reused
	// maxAnswer bounds an answer's body (0: defaultMaxAnswer); larger is an
	// error
	maxAnswer int
}

// defaultMaxAnswer is the largest answer body a leanConn reads by default.
const defaultMaxAnswer = 64 * 1024

// postHead writes the request line and the header lines of POST u (without
// the blank line that ends them) and returns u parsed; only http:// is
// supported.
func postHead(b *bytes.Buffer, client, u string, header http.Header) (*url.URL, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	if pu.Scheme != "http" {
		return nil, fmt.Errorf("%s: %s: only http:// is supported", client, u)
	}
	fmt.Fprintf(b, "POST %s HTTP/1.1\r\nHost: %s\r\n", pu.RequestURI(), pu.Host)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(b, "%s: %s\r\n", k, v)
		}
	}
	return pu, nil
}

// newLeanConn prepares POST u with header and body.
func newLeanConn(u string, header http.Header, body []byte) (*leanConn, error) {
	var b bytes.Buffer
	pu, err := postHead(&b, "lean client", u, header)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	return &leanConn{addr: pu.Host, req: b.Bytes()}, nil
}

// do sends the request and reads the answer; it returns the status code and
// the body (valid until the next call).
func (c *leanConn) do(ctx context.Context) (int, []byte, error) {
	if c.conn == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return 0, nil, err
		}
		c.conn = conn
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 4096)
		} else {
			c.br.Reset(conn)
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	} else {
		_ = c.conn.SetDeadline(time.Time{})
	}
	code, body, keep, err := c.roundTrip()
	if err != nil || !keep {
		c.close()
	}
	return code, body, err
}

func (c *leanConn) roundTrip() (code int, body []byte, keep bool, err error) {
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, nil, false, err
	}
	hd, err := readHead(c.br)
	if err != nil {
		return hd.code, nil, false, err
	}
	limit := c.maxAnswer
	if limit <= 0 {
		limit = defaultMaxAnswer
	}
	switch {
	case hd.chunked:
		// Not what the service answers; read correctly all the same. The
		// chunked reader stops at the last chunk and leaves the trailer
		// unread, so the connection is not used again.
		c.body, err = io.ReadAll(io.LimitReader(httputil.NewChunkedReader(c.br), int64(limit)))
		return hd.code, c.body, false, err
	case hd.length < 0:
		return hd.code, nil, false, errors.New("lean client: answer without Content-Length")
	case hd.length > limit:
		return hd.code, nil, false, fmt.Errorf("lean client: answer of %d bytes", hd.length)
	}
	if cap(c.body) < hd.length {
		c.body = make([]byte, hd.length)
	}
	c.body = c.body[:hd.length]
	if _, err := io.ReadFull(c.br, c.body); err != nil {
		return hd.code, nil, false, err
	}
	return hd.code, c.body, hd.keep, nil
}

// respHead is what the lean clients read of an answer's head.
type respHead struct {
	code    int
	length  int  // Content-Length; -1 when absent
	chunked bool // Transfer-Encoding: chunked
	keep    bool // no "Connection: close"
}

// readHead reads an answer's status line and headers from br.
func readHead(br *bufio.Reader) (respHead, error) {
	hd := respHead{length: -1, keep: true}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return hd, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return hd, fmt.Errorf("lean client: bad status line %q", line)
	}
	if hd.code, err = strconv.Atoi(string(line[9:12])); err != nil {
		return hd, fmt.Errorf("lean client: bad status line %q", line)
	}
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return hd, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			return hd, nil
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return hd, fmt.Errorf("lean client: bad header line %q", h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if hd.length, err = strconv.Atoi(string(value)); err != nil || hd.length < 0 {
				return hd, fmt.Errorf("lean client: bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			hd.chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				hd.keep = false
			}
		}
	}
}

func (c *leanConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}
