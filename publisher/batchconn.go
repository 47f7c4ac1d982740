package publisher

import (
	"net"
	"sync"
	"time"
)

// batchConn coalesces writes to the broker. amqp091-go flushes its buffer
// after every publish, which costs one write syscall per message here and one
// TCP segment per message for the broker to read. batchConn's Write only
// appends to a pending buffer and wakes a writer goroutine; while that
// goroutine is in its write syscall, the publishes that follow accumulate and go
// out together in the next one (the group-commit idea applied to a socket). At
// low load every Write still goes out at once; nothing waits for a timer.
//
// A write error is sticky: it is returned by every later Write (amqp091-go then
// shuts the connection down, as it would for a direct write error; its reader
// sees the dead socket too). Pending bytes are bounded by maxPending; a Write
// beyond it waits until the writer has caught up.
type batchConn struct {
	net.Conn

	mu      sync.Mutex
	cond    sync.Cond // signalled when pending shrinks or err is set; guards nothing else
	pending []byte    // bytes accepted by Write, not yet written; mu held
	err     error     // first write error, sticky; mu held
	closed  bool      // mu held

	wake chan struct{} // capacity 1: "pending is not empty"
	done chan struct{} // closed when the writer goroutine has returned
}

const maxPending = 1 << 20

// closeFlushTimeout bounds how long Close waits for the pending bytes (the
// connection.close-ok, typically) to be written: a healthy loopback or LAN
// peer takes well under a millisecond; a peer that stopped reading (a broker
// under an alarm) would otherwise hold Close for as long as it lasts.
const closeFlushTimeout = 200 * time.Millisecond

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.cond.L = &b.mu
	go b.writer()
	return b
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.pending) >= maxPending && b.err == nil && !b.closed {
		b.cond.Wait()
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	if b.closed {
		b.mu.Unlock()
		return 0, net.ErrClosed
	}
	b.pending = append(b.pending, p...)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (b *batchConn) writer() {
	defer close(b.done)
	var out []byte
	for range b.wake {
		b.mu.Lock()
		out, b.pending = b.pending, out[:0]
		closed := b.closed
		b.cond.Broadcast()
		b.mu.Unlock()
		if len(out) > 0 {
			if _, err := b.Conn.Write(out); err != nil {
				b.mu.Lock()
				b.err = err
				b.cond.Broadcast()
				b.mu.Unlock()
				return
			}
		}
		if closed {
			return
		}
	}
}

// Close writes what is pending (best effort: the peer may be gone), then
// closes the socket.
func (b *batchConn) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return b.Conn.Close()
	}
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	// Give the writer a moment to send what is pending (e.g. a close-ok),
	// but never hang on a peer that stopped reading.
	t := time.NewTimer(closeFlushTimeout)
	defer t.Stop()
	select {
	case <-b.done:
	case <-t.C:
	}
	err := b.Conn.Close()
	<-b.done
	return err
}
