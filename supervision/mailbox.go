package supervision

import "sync"

// Mailbox is a bounded FIFO queue that belongs to a stable reference (an
// [Actor]), not to one incarnation: it survives restarts of the goroutine
// reading it, so messages sent while an actor restarts wait here and are
// read, in order, by the next incarnation.
//
// Send never blocks; a full mailbox is back-pressure the caller must handle
// ([ErrMailboxFull]). Close hands back what is still queued so the owner can
// fail it back: no message is silently dropped.
type Mailbox[M any] struct {
	ch   chan M
	done chan struct{}

	mu     sync.Mutex // makes Send and Close atomic with respect to each other
	closed bool       // guarded by mu
}

// NewMailbox returns a mailbox holding up to capacity messages (a capacity
// below 1 is treated as 1).
func NewMailbox[M any](capacity int) *Mailbox[M] {
	if capacity < 1 {
		capacity = 1
	}
	return &Mailbox[M]{ch: make(chan M, capacity), done: make(chan struct{})}
}

// Send enqueues msg without blocking. It returns ErrMailboxFull when the
// mailbox is full and ErrStopped after Close.
func (m *Mailbox[M]) Send(msg M) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrStopped
	}
	select {
	case m.ch <- msg:
		return nil
	default:
		return ErrMailboxFull
	}
}

// Receive returns the channel the current incarnation selects on. The
// channel is never closed; select on Done as well.
func (m *Mailbox[M]) Receive() <-chan M { return m.ch }

// Len returns the number of queued messages.
func (m *Mailbox[M]) Len() int { return len(m.ch) }

// Close stops accepting messages (later Sends return ErrStopped), closes
// Done and returns the messages still queued, oldest first. Only the first
// call returns messages; later calls return nil.
func (m *Mailbox[M]) Close() []M {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	close(m.done)
	var pending []M
	for {
		select {
		case msg := <-m.ch:
			pending = append(pending, msg)
		default:
			return pending
		}
	}
}

// Done is closed by Close.
func (m *Mailbox[M]) Done() <-chan struct{} { return m.done }
