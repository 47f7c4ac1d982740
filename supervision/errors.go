package supervision

import (
	"errors"
	"fmt"
)

var (
	// ErrMailboxFull is returned by [Mailbox.Send] when the mailbox holds
	// its capacity of messages. Send never blocks: the caller decides whether
	// to retry, shed load or fail the request.
	ErrMailboxFull = errors.New("supervision: mailbox full")

	// ErrStopped is returned by [Mailbox.Send] (and [Actor.Send]) once the
	// mailbox has been closed, i.e. the actor was stopped for good.
	ErrStopped = errors.New("supervision: actor stopped")

	// ErrUnexpectedReturn is the failure recorded when a [Permanent] child's
	// Serve returns nil while its context is still live: a permanent child
	// must run until it is told to stop.
	ErrUnexpectedReturn = errors.New("supervision: child returned unexpectedly")

	// errAlreadyServing is returned by a second, concurrent Serve call.
	errAlreadyServing = errors.New("supervision: supervisor is already serving")

	// errStopForRestart is the cancellation cause a supervisor gives a
	// child's context when it stops the child in order to restart it (a
	// sibling's restart under OneForAll/RestForOne) or because it escalates.
	// A sub-supervisor seeing this cause stops its own children without
	// calling Terminated, because the subtree may well be started again and
	// its mailboxes must keep their messages.
	errStopForRestart = errors.New("supervision: stopped for restart")
)

// EscalationError is what [Supervisor.Serve] returns when the decider
// escalates a child's failure. Unwrap returns Err, so errors.Is and
// errors.As find the original cause through any number of levels.
type EscalationError struct {
	Supervisor string // the supervisor that escalated
	Child      string // its child whose failure was escalated
	Err        error  // that child's failure
}

func (e *EscalationError) Error() string {
	return fmt.Sprintf("supervision: supervisor %q escalated failure of child %q: %v", e.Supervisor, e.Child, e.Err)
}

// Unwrap returns the escalated failure.
func (e *EscalationError) Unwrap() error { return e.Err }

// PanicError is the failure of a child whose Serve panicked. The panic is
// recovered in the child's goroutine; Stack is the stack at recovery time.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("supervision: panic: %v", e.Value) }

// Unwrap returns the panic value when it is an error, so errors.Is sees
// through panic(err).
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}
