package supervision

import (
	"context"
	"sync"
)

// Receiver handles an actor's messages. A non-nil error is a failure of the
// incarnation: Serve returns it and the supervisor decides.
type Receiver[M any] interface {
	Receive(ctx context.Context, msg M) error
}

// Actor is a generic supervised actor with a stable reference. Callers keep
// the *Actor across restarts; its [Mailbox] belongs to the reference, so
// messages sent during a restart wait there and are processed, in order, by
// the next incarnation.
//
// The receiver (the actor's state) is built by newReceiver on the first
// start and after BeforeRestart, i.e. after a Restart directive; a Resume
// keeps it. Terminated closes the mailbox for good, so a stopped actor
// answers Send with ErrStopped instead of being re-created.
//
// Add an Actor to a supervisor as the Service of a ChildSpec.
type Actor[M any] struct {
	mb          *Mailbox[M]
	newReceiver func() Receiver[M]

	mu           sync.Mutex
	recv         Receiver[M]                     // guarded by mu; nil before the first start
	fresh        bool                            // guarded by mu: next Serve builds a new receiver
	onTerminated func(reason error, pending []M) // guarded by mu
}

// NewActor returns an actor whose mailbox holds up to capacity messages.
func NewActor[M any](capacity int, newReceiver func() Receiver[M]) *Actor[M] {
	return &Actor[M]{mb: NewMailbox[M](capacity), newReceiver: newReceiver}
}

// Send enqueues msg; see [Mailbox.Send].
func (a *Actor[M]) Send(msg M) error { return a.mb.Send(msg) }

// Mailbox returns the actor's mailbox (e.g. for Len).
func (a *Actor[M]) Mailbox() *Mailbox[M] { return a.mb }

// OnTerminated sets a function called by Terminated with the messages that
// were still queued, so the owner can fail them back to their senders.
// Without it those messages are discarded when the actor is terminated.
func (a *Actor[M]) OnTerminated(f func(reason error, pending []M)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onTerminated = f
}

// SignalReceiver is a [Receiver] that also takes signals. An Actor whose
// receiver implements it traps exits while it runs as a process (under a
// supervisor or [Spawn]): the [Exit] of a linked party and the [Down] of a
// monitor are handed to ReceiveSignal like messages, each before the next
// mailbox message (signals first, as protoactor-go's system queue). A
// non-nil error is a failure of the incarnation, as from Receive.
type SignalReceiver interface {
	ReceiveSignal(ctx context.Context, s Signal) error
}

// Serve runs one incarnation: it receives messages in order and hands them
// to the receiver until ctx is cancelled (returns ctx.Err()), the receiver
// fails (returns its error) or the mailbox is closed (returns ErrStopped).
// A receiver that is a [SignalReceiver] gets the process's signals too.
func (a *Actor[M]) Serve(ctx context.Context) error {
	a.mu.Lock()
	if a.recv == nil || a.fresh {
		a.recv, a.fresh = a.newReceiver(), false
	}
	r := a.recv
	a.mu.Unlock()
	proc := Self(ctx)
	sr, traps := r.(SignalReceiver)
	var wake <-chan struct{} // nil: this actor takes no signals
	if traps && proc != nil {
		proc.TrapExits(true)
		wake = proc.notify
	}
	// signals hands every queued signal to the receiver; it runs before each
	// message, so a signal queued before a message was sent is handled first.
	signals := func() error {
		for wake != nil {
			s, ok := proc.takeSignal()
			if !ok {
				return nil
			}
			if err := sr.ReceiveSignal(ctx, s); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		if err := signals(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.mb.Done():
			return ErrStopped
		case <-wake: // a signal was queued: handled at the top of the loop
		case msg := <-a.mb.Receive():
			if err := signals(); err != nil {
				return err
			}
			if err := r.Receive(ctx, msg); err != nil {
				return err
			}
		}
	}
}

// BeforeRestart marks that the next Serve must build a fresh receiver.
func (a *Actor[M]) BeforeRestart(cause error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fresh = true
}

// Terminated closes the mailbox for good and passes the messages still
// queued to the OnTerminated function, if any. It is idempotent.
func (a *Actor[M]) Terminated(reason error) {
	pending := a.mb.Close()
	a.mu.Lock()
	f := a.onTerminated
	a.mu.Unlock()
	if f != nil && pending != nil {
		f(reason, pending)
	}
}
