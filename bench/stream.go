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
	"strconv"
	"sync"
	"time"
)

const (
	// streamWriteGroup bounds the lines one write of the stream client
	// carries (one HTTP chunk).
	streamWriteGroup = 128
	// streamOpenTimeout bounds opening a stream: the dial and the answer's
	// head, which the service writes before it reads a line.
	streamOpenTimeout = 10 * time.Second
	ndjson            = "application/x-ndjson"
)

// streamConn is one /v1/stream request on a connection of its own, full
// duplex: the request body (chunked, a chunk per group of lines) is written
// while the answer's result lines are read. Like leanConn it is hand-written
// for the load generator's CPU on a machine it shares with the service and
// the broker: one write per group of lines, reads of up to 64 KiB, no
// goroutine but the reader and the writer of the mode.
type streamConn struct {
	conn  net.Conn
	lines *bufio.Reader // the answer's body, dechunked: the result lines
	buf   []byte        // the chunk being written, reused
}

// openStream dials u's host, sends the head of POST u with header and a
// chunked body, and reads the answer's head, which the service sends before
// it reads a line: anything but a 200 with a chunked body is an error (a
// 100 Continue is skipped).
func openStream(ctx context.Context, u string, header http.Header) (*streamConn, error) {
	var head bytes.Buffer
	pu, err := postHead(&head, "stream client", u, header)
	if err != nil {
		return nil, err
	}
	// "Expect: 100-continue" makes net/http's server answer a refusal (401,
	// 415, 503 before the stream starts) at once: without it the server
	// first reads and discards up to 256 KiB of the body, which this client
	// sends only after the answer's head. A stream the service takes is
	// answered 200 before any 100 Continue, and then read.
	head.WriteString("Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", pu.Host)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	sc, err := startStream(conn, head.Bytes())
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return sc, nil
}

// startStream writes the request's head on conn and reads the answer's.
func startStream(conn net.Conn, head []byte) (*streamConn, error) {
	if _, err := conn.Write(head); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	hd, err := readHead(br)
	for err == nil && hd.code == http.StatusContinue {
		hd, err = readHead(br)
	}
	if err != nil {
		return nil, err
	}
	if hd.code != http.StatusOK {
		var body []byte
		if hd.length > 0 {
			body = make([]byte, min(hd.length, 4096))
			n, _ := io.ReadFull(br, body)
			body = body[:n]
		}
		return nil, fmt.Errorf("HTTP %d: %s", hd.code, bytes.TrimSpace(body))
	}
	if !hd.chunked {
		return nil, errors.New("stream client: a 200 answer without a chunked body")
	}
	return &streamConn{conn: conn, lines: bufio.NewReaderSize(httputil.NewChunkedReader(br), 64<<10)}, nil
}

// writeLines writes n copies of line (which ends in '\n') as one chunk.
func (sc *streamConn) writeLines(line []byte, n int) error {
	b := sc.buf[:0]
	b = strconv.AppendInt(b, int64(n*len(line)), 16)
	b = append(b, '\r', '\n')
	for range n {
		b = append(b, line...)
	}
	b = append(b, '\r', '\n')
	sc.buf = b
	_, err := sc.conn.Write(b)
	return err
}

// closeBody ends the request body: the service answers what it took and
// then ends the answer.
func (sc *streamConn) closeBody() error {
	_, err := sc.conn.Write([]byte("0\r\n\r\n"))
	return err
}

// lineBuffered reports whether a whole result line is buffered already (a
// read then does not wait). Beyond 1 KiB it guesses yes without looking: a
// result line is about 100 bytes.
func (sc *streamConn) lineBuffered() bool {
	n := sc.lines.Buffered()
	switch {
	case n == 0:
		return false
	case n > 1024:
		return true
	}
	b, _ := sc.lines.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

func (sc *streamConn) close() { sc.conn.Close() }

// streamFlow is the bookkeeping of one stream, shared by its writer and its
// reader (mu guards every field but wake): at most window lines written and
// not answered, and when each of them was written.
type streamFlow struct {
	mu   sync.Mutex
	free int               // lines that may be written now: window minus those unanswered
	sent map[int]time.Time // written and not answered: when, by line index
	next int               // index of the next line to write
	wake chan struct{}     // capacity 1: free grew, or the reader ended
}

func newStreamFlow(window int) *streamFlow {
	return &streamFlow{free: window, sent: make(map[int]time.Time, window), wake: make(chan struct{}, 1)}
}

// take reserves up to most lines to write now, as written at at; it returns
// how many (0: the window is full).
func (f *streamFlow) take(most int, at time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := min(f.free, most)
	for k := range n {
		f.sent[f.next+k] = at
	}
	f.free -= n
	f.next += n
	return n
}

// settle ends line index, answered: it returns when the line was written,
// false when no such line was waiting for its result.
func (f *streamFlow) settle(index int) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.sent[index]
	if ok {
		delete(f.sent, index)
		f.free++
	}
	return at, ok
}

// unanswered is the number of lines written and not answered.
func (f *streamFlow) unanswered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent)
}

// signal wakes the writer (without blocking).
func (f *streamFlow) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// write is the stream's writer: groups of lines, as the window allows,
// until the window's end; then it ends the request body.
func (f *streamFlow) write(ctx context.Context, w window, sc *streamConn, line []byte, readerDone <-chan struct{}) error {
	end := time.NewTimer(time.Until(w.measureEnd))
	defer end.Stop()
	for {
		now := time.Now()
		if !now.Before(w.measureEnd) {
			return sc.closeBody()
		}
		if n := f.take(streamWriteGroup, now); n > 0 {
			if err := sc.writeLines(line, n); err != nil {
				return err
			}
			continue
		}
		select {
		case <-f.wake:
		case <-end.C:
			return sc.closeBody()
		case <-ctx.Done():
			return ctx.Err()
		case <-readerDone:
			return errors.New("stream client: the answer ended while lines were being sent")
		}
	}
}

// read is the stream's reader: it reads result lines until the answer ends
// and records each into rec, a status 200 as confirmed (latency: its line's
// write to its result's read), anything else as failed. It returns nil when
// the answer ended properly.
func (f *streamFlow) read(sc *streamConn, rec *recorder) error {
	for {
		raw, err := sc.lines.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && len(raw) == 0 {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("stream client: the answer ended inside a line: %q", raw)
			}
			return err
		}
		end := time.Now()
		r, err := parseResult(raw)
		if err != nil {
			return err
		}
		begin, ok := f.settle(r.index)
		if !ok {
			return fmt.Errorf("stream client: a result for line %d, which was not waiting for one", r.index)
		}
		if r.status == http.StatusOK {
			rec.recordN(begin, end, 1)
		} else {
			rec.fail(1, errors.New(r.errText()))
		}
		if !sc.lineBuffered() {
			f.signal()
		}
	}
}

// streamURL is the service's /v1/stream.
func (b *bench) streamURL() string { return "http://" + b.svc.proc.APIAddr() + "/v1/stream" }

// runStream is mode (g): -streams concurrent /v1/stream requests, each
// writing lines while it reads results, with at most -stream-window lines
// unanswered; a stream lasts the whole mode (it is opened again only after
// a failure). A message counts when its result line has status 200; one
// latency sample per message, from its line's write to its result's read.
func (b *bench) runStream(ctx context.Context, w window) (merged, error) {
	obj, err := b.messageObject()
	if err != nil {
		return merged{}, err
	}
	line := append(obj, '\n')
	u, h := b.streamURL(), http.Header{"Content-Type": {ndjson}}
	rs := make([]*recorder, b.cfg.streams)
	var wg sync.WaitGroup
	for i := range rs {
		rs[i] = newRecorder(w)
		wg.Add(1)
		go func(rec *recorder) {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(w.measureEnd) {
				if err := runOneStream(ctx, w, u, h, line, b.cfg.streamWindow, rec); err != nil {
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		}(rs[i])
	}
	wg.Wait()
	return merge(rs), nil
}

// runOneStream opens a stream and runs it until the window's end and every
// result is read, or until it fails. A stream that cannot be opened counts
// as one failure; the lines left without a result count as failed.
func runOneStream(ctx context.Context, w window, u string, h http.Header, line []byte, window int, rec *recorder) error {
	octx, cancel := context.WithTimeout(ctx, streamOpenTimeout)
	sc, err := openStream(octx, u, h)
	cancel()
	if err != nil {
		err = fmt.Errorf("opening the stream: %w", err)
		rec.fail(1, err)
		return err
	}
	defer sc.close()
	stop := context.AfterFunc(ctx, sc.close) // unblocks the reader and the writer
	defer stop()
	_ = sc.conn.SetDeadline(w.measureEnd.Add(opTimeout))
	f := newStreamFlow(window)
	readerDone := make(chan struct{})
	var readErr error
	go func() {
		defer close(readerDone)
		if readErr = f.read(sc, rec); readErr != nil {
			sc.close() // unblocks the writer
		}
	}()
	writeErr := f.write(ctx, w, sc, line, readerDone)
	if writeErr != nil {
		sc.close() // unblocks the reader
	}
	<-readerDone
	err = errors.Join(writeErr, readErr)
	if n := f.unanswered(); n > 0 {
		why := err
		if why == nil {
			why = errors.New("the answer ended")
		}
		rec.fail(n, fmt.Errorf("%d lines without a result: %w", n, why))
		if err == nil {
			err = why
		}
	}
	return err
}
