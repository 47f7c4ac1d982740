package supervision

// Links, monitors and trapped exits, hand-written: Go has no process
// runtime to borrow them from, and the actor libraries measured for this
// (protoactor-go's Watch/Unwatch, ergo's Link/Monitor) bring a whole actor
// system (PIDs, a registry, remote nodes) where this needs one struct per
// party. Their semantics are Erlang's (see "Links, monitors and exit traps"
// in the package doc).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrExited is returned by [Process.Link] and [Process.Monitor] when the
// process asked to link or monitor has itself exited.
var ErrExited = errors.New("supervision: process has exited")

// Process is a party that others can link to and monitor: a running
// Service (started with [Spawn], or an incarnation of a supervised child)
// with an identity, a queue of the [Signal]s it receives, and an exit
// reason once it has ended. Inside a Serve, [Self] returns it.
//
// The Service's goroutine owns its own state. The state of the party itself
// — its links, its monitors, whether it traps exits, its signal queue, its
// exit — is guarded by mu, and every method may be called from any
// goroutine. A link is one relation held by two parties: Link, Unlink and
// Monitor lock both parties (the lower id first) so that the relation
// changes on both sides at once, and a party's exit marks it exited under
// its own lock before it tells anyone, so a Link either finds the party
// alive (and the exit will find the link) or exited (and the Link delivers
// the notice itself): no notice is lost and none is delivered twice. The
// alternative, a goroutine per party owning its links and messages between
// those goroutines as in Erlang's runtime, needs an unlink acknowledgement
// to keep both sides of a link consistent (OTP 23 added one for that) and a
// second goroutine per party; the two locks need neither. No lock is held
// while user code runs or while a context is cancelled.
type Process struct {
	id     uint64
	name   string
	cancel context.CancelCauseFunc // ends the Service's context: the kill
	done   chan struct{}           // closed once the exit has been told to every link and monitor
	notify chan struct{}           // capacity 1: a signal was queued

	mu         sync.Mutex
	exited     bool                    // guarded by mu: the Service returned; set before the exit is propagated
	reason     error                   // guarded by mu: the exit reason once exited
	killed     bool                    // guarded by mu: a linked exit (or Kill) ended it; killReason is its exit reason
	killReason error                   // guarded by mu
	trap       bool                    // guarded by mu
	waiting    bool                    // guarded by mu: the Service waits in Receive
	links      map[*Process]struct{}   // guarded by mu
	monitors   map[MonitorRef]*Process // guarded by mu: the monitors this process holds, by ref: the monitored party
	watchers   map[MonitorRef]*Process // guarded by mu: the monitors held on this process, by ref: their holder
	queue      []Signal                // guarded by mu: received, not yet taken by Receive
	idle       []chan struct{}         // guarded by mu: Idle calls waiting
}

// ids numbers processes and monitor references; the lock order of two
// processes is the order of their ids.
var ids atomic.Uint64

func newProcess(name string, cancel context.CancelCauseFunc) *Process {
	return &Process{
		id:     ids.Add(1),
		name:   name,
		cancel: cancel,
		done:   make(chan struct{}),
		notify: make(chan struct{}, 1),
	}
}

type processKey struct{}

// Self returns the process whose Serve received ctx (or a context derived
// from it), or nil when ctx did not come from [Spawn] or a supervisor.
func Self(ctx context.Context) *Process {
	p, _ := ctx.Value(processKey{}).(*Process)
	return p
}

// Spawn runs svc.Serve in a new goroutine, as a process named name, and
// returns at once. Serve's context is derived from ctx and carries the
// process ([Self]); it is cancelled when ctx is, or with an [*ExitError]
// cause when a linked party's abnormal exit (or [Process.Kill]) ends the
// process. The process exits when Serve returns: its reason is what Serve
// returned (a recovered panic is a [*PanicError]), or the linked exit's
// reason when one ended it. Wait for [Process.Done] before the goroutine
// that spawned it returns: nothing else ends the goroutine.
func Spawn(ctx context.Context, name string, svc Service) *Process {
	pctx, cancel := context.WithCancelCause(ctx)
	p := newProcess(name, cancel)
	pctx = context.WithValue(pctx, processKey{}, p)
	go func() {
		err, _ := serveRecover(pctx, svc)
		p.exit(err)
	}()
	return p
}

// Name returns the name given to Spawn (for a supervised child: its name).
func (p *Process) Name() string { return p.name }

// String returns the name, so signals print as Exit(name, reason).
func (p *Process) String() string {
	if p == nil {
		return "<nil>"
	}
	return p.name
}

// Done is closed once the process has exited and every link and monitor
// has been told (trapping parties have the Exit queued, others have been
// ended, monitors have the Down queued).
func (p *Process) Done() <-chan struct{} { return p.done }

// Reason returns the exit reason once Done is closed (nil: a normal exit),
// and nil before.
func (p *Process) Reason() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// ProcessState is what a process is doing, as [Process.State] reports it.
type ProcessState int

const (
	// ProcessRunning: its Service runs (and is not waiting in Receive with
	// nothing queued).
	ProcessRunning ProcessState = iota + 1
	// ProcessWaiting: its Service waits in Receive and nothing is queued.
	ProcessWaiting
	// ProcessExiting: a linked exit (or Kill) ended it; its Service has not
	// returned yet.
	ProcessExiting
	// ProcessExited: its Service returned.
	ProcessExited
)

func (s ProcessState) String() string {
	switch s {
	case ProcessRunning:
		return "running"
	case ProcessWaiting:
		return "waiting"
	case ProcessExiting:
		return "exiting"
	case ProcessExited:
		return "exited"
	}
	return fmt.Sprintf("ProcessState(%d)", int(s))
}

// State returns what the process is doing now.
func (p *Process) State() ProcessState {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.exited:
		return ProcessExited
	case p.killed:
		return ProcessExiting
	case p.idleLocked():
		return ProcessWaiting
	}
	return ProcessRunning
}

// Signal is what a process receives from the parties it is linked to (when
// it traps exits) or monitors: an [Exit] or a [Down].
type Signal interface {
	isSignal()
	String() string
}

// Exit is the signal a process trapping exits receives when a party linked
// to it exits, normally or not, or when [Process.Kill] is called on it.
type Exit struct {
	From   *Process // the party that exited; nil for Kill
	Reason error    // its exit reason; nil: a normal exit
}

// Down is the signal a monitor receives, once, when the monitored party
// exits (or at once, when it had already exited).
type Down struct {
	Ref    MonitorRef
	From   *Process // the monitored party
	Reason error    // its exit reason; nil: a normal exit
}

func (Exit) isSignal() {}
func (Down) isSignal() {}

// String formats the signal as Exit(party, reason), "normal" for a nil
// reason.
func (e Exit) String() string { return fmt.Sprintf("Exit(%v, %s)", e.From, reasonText(e.Reason)) }

// String formats the signal as Down(party, reason).
func (d Down) String() string { return fmt.Sprintf("Down(%v, %s)", d.From, reasonText(d.Reason)) }

func reasonText(err error) string {
	if err == nil {
		return "normal"
	}
	return err.Error()
}

// MonitorRef identifies one monitor, for [Process.Demonitor].
type MonitorRef struct{ n uint64 }

// ExitError is the cause of a process's context when a linked party's
// abnormal exit, or Kill, ended the process; its exit reason is then
// Reason (as in Erlang: the reason travels on unchanged).
type ExitError struct {
	From   *Process // the linked party that exited; nil for Kill
	Reason error
}

func (e *ExitError) Error() string {
	if e.From == nil {
		return fmt.Sprintf("supervision: killed: %v", e.Reason)
	}
	return fmt.Sprintf("supervision: linked process %v exited: %v", e.From, e.Reason)
}

// Unwrap returns Reason.
func (e *ExitError) Unwrap() error { return e.Reason }

// lockPair locks p and q (distinct), the lower id first.
func lockPair(p, q *Process) {
	if p.id < q.id {
		p.mu.Lock()
		q.mu.Lock()
	} else {
		q.mu.Lock()
		p.mu.Lock()
	}
}

// TrapExits sets whether the process traps exits and returns the previous
// setting. A trapping process receives an [Exit] signal when a linked party
// exits (normally or not) instead of being ended by an abnormal exit.
func (p *Process) TrapExits(on bool) (was bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	was, p.trap = p.trap, on
	return was
}

// Link links p and q, both ways: when either exits abnormally (a non-nil
// reason), the other is ended with the same reason unless it traps exits,
// in which case it receives an [Exit]; a normal exit (nil) ends neither
// and is delivered as an Exit to a trapping party only. A link is delivered
// once and is then gone. Linking twice is linking once; linking a process
// to itself does nothing.
//
// When q has already exited, p is told at once, as if q exited now: no
// notice is lost to a race between the link and the exit. Link returns
// ErrExited when p itself has exited.
func (p *Process) Link(q *Process) error {
	if q == p {
		return nil
	}
	lockPair(p, q)
	if p.exited {
		p.mu.Unlock()
		q.mu.Unlock()
		return ErrExited
	}
	if q.exited {
		reason := q.reason
		p.mu.Unlock()
		q.mu.Unlock()
		p.exitSignal(q, reason, false)
		return nil
	}
	if p.links == nil {
		p.links = make(map[*Process]struct{})
	}
	if q.links == nil {
		q.links = make(map[*Process]struct{})
	}
	p.links[q], q.links[p] = struct{}{}, struct{}{}
	p.mu.Unlock()
	q.mu.Unlock()
	return nil
}

// Unlink removes the link between p and q, if any. After it returns,
// neither is told of the other's exit through that link.
func (p *Process) Unlink(q *Process) {
	if q == p {
		return
	}
	lockPair(p, q)
	delete(p.links, q)
	delete(q.links, p)
	p.mu.Unlock()
	q.mu.Unlock()
}

// Monitor makes p monitor q: when q exits, p receives one [Down] signal
// with q's reason (at once when q has already exited). A monitor never ends
// p, whatever the reason, and whether p traps exits or not. Monitoring twice
// makes two monitors. It returns ErrExited when p itself has exited.
func (p *Process) Monitor(q *Process) (MonitorRef, error) {
	ref := MonitorRef{ids.Add(1)}
	if q == p {
		return ref, nil // a process never sees its own exit
	}
	lockPair(p, q)
	if p.exited {
		p.mu.Unlock()
		q.mu.Unlock()
		return MonitorRef{}, ErrExited
	}
	if q.exited {
		reason := q.reason
		p.queueLocked(Down{Ref: ref, From: q, Reason: reason})
		p.mu.Unlock()
		q.mu.Unlock()
		return ref, nil
	}
	if p.monitors == nil {
		p.monitors = make(map[MonitorRef]*Process)
	}
	if q.watchers == nil {
		q.watchers = make(map[MonitorRef]*Process)
	}
	p.monitors[ref], q.watchers[ref] = q, p
	p.mu.Unlock()
	q.mu.Unlock()
	return ref, nil
}

// Demonitor ends the monitor ref of p: after it returns, p receives no Down
// for it (one already queued is removed). It reports whether the Down had
// not been taken by Receive yet (false: it was, or ref is unknown).
func (p *Process) Demonitor(ref MonitorRef) bool {
	p.mu.Lock()
	q, active := p.monitors[ref]
	delete(p.monitors, ref)
	queued := false
	for i, s := range p.queue {
		if d, ok := s.(Down); ok && d.Ref == ref {
			p.queue = append(p.queue[:i:i], p.queue[i+1:]...)
			queued = true
			break
		}
	}
	p.mu.Unlock()
	if active {
		q.mu.Lock()
		delete(q.watchers, ref)
		q.mu.Unlock()
	}
	return active || queued
}

// Kill sends p an exit signal from no party: p is ended with reason unless
// it traps exits (it then receives Exit{From: nil, Reason: reason}); a nil
// reason is a normal exit and ends nothing. Erlang's exit(Pid, Reason).
func (p *Process) Kill(reason error) { p.exitSignal(nil, reason, false) }

// exitSignal delivers the exit of from (nil: Kill) with reason to p. With
// viaLink it is the delivery of a link, which applies only while p still
// holds the link (an Unlink may have removed it) and removes it.
func (p *Process) exitSignal(from *Process, reason error, viaLink bool) {
	p.mu.Lock()
	if p.exited {
		p.mu.Unlock()
		return
	}
	if viaLink {
		if _, ok := p.links[from]; !ok {
			p.mu.Unlock()
			return
		}
		delete(p.links, from)
	}
	kill := false
	switch {
	case p.trap:
		p.queueLocked(Exit{From: from, Reason: reason})
	case reason != nil && !p.killed:
		p.killed, p.killReason, kill = true, reason, true
	}
	p.mu.Unlock()
	if kill {
		p.cancel(&ExitError{From: from, Reason: reason})
	}
}

// queueLocked queues s for Receive and wakes it. p.mu is held.
func (p *Process) queueLocked(s Signal) {
	if p.exited {
		return
	}
	p.queue = append(p.queue, s)
	select {
	case p.notify <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// Receive returns the oldest signal queued for p, waiting for one until
// ctx ends (it then returns ctx.Err()). Only the process's own Service
// should call it, from one goroutine at a time.
func (p *Process) Receive(ctx context.Context) (Signal, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p.mu.Lock()
		if len(p.queue) > 0 {
			s := p.queue[0]
			p.queue = p.queue[1:]
			p.waiting = false
			p.mu.Unlock()
			return s, nil
		}
		p.waiting = true
		var idle []chan struct{}
		if p.idleLocked() {
			idle, p.idle = p.idle, nil
		}
		p.mu.Unlock()
		for _, c := range idle {
			close(c)
		}
		select {
		case <-p.notify:
		case <-ctx.Done():
			p.mu.Lock()
			p.waiting = false
			p.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

// takeSignal returns the oldest queued signal without waiting.
func (p *Process) takeSignal() (Signal, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return nil, false
	}
	s := p.queue[0]
	p.queue = p.queue[1:]
	return s, true
}

// Idle waits until p has handled every signal queued for it so far and
// waits in Receive for the next, or has exited and told its links and
// monitors (Done is closed); it returns ctx.Err() if ctx ends first. An
// observer (a test, an example) waits with it for a cascade of exits to
// settle instead of sleeping: a process that never calls Receive is idle
// only once it has exited.
func (p *Process) Idle(ctx context.Context) error {
	p.mu.Lock()
	if p.idleLocked() {
		p.mu.Unlock()
		return nil
	}
	var c chan struct{}
	if !p.exited {
		c = make(chan struct{})
		p.idle = append(p.idle, c)
	}
	p.mu.Unlock()
	select {
	case <-c: // nil once exited: only done can fire
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// idleLocked reports whether the Service waits in Receive with nothing
// queued and nothing ending it. p.mu is held.
func (p *Process) idleLocked() bool {
	return !p.exited && !p.killed && p.waiting && len(p.queue) == 0
}

// exit ends the process after its Service returned err, and returns its
// exit reason: err, or the reason of the linked exit (or Kill) that ended
// it. Every link is told (a trapping party gets an Exit, another is ended
// by an abnormal reason), every monitor gets its Down, the monitors p held
// are removed from their targets, and Done is closed last.
func (p *Process) exit(err error) error {
	p.mu.Lock()
	if p.killed {
		err = p.killReason
	}
	p.exited, p.reason = true, err
	links, watchers, monitors, idle := p.links, p.watchers, p.monitors, p.idle
	p.links, p.watchers, p.monitors, p.idle, p.queue = nil, nil, nil, nil, nil
	p.mu.Unlock()

	for q := range links {
		q.exitSignal(p, err, true)
	}
	for ref, holder := range watchers {
		holder.mu.Lock()
		if holder.monitors[ref] == p {
			delete(holder.monitors, ref)
			holder.queueLocked(Down{Ref: ref, From: p, Reason: err})
		}
		holder.mu.Unlock()
	}
	for ref, q := range monitors {
		q.mu.Lock()
		delete(q.watchers, ref)
		q.mu.Unlock()
	}
	p.cancel(context.Canceled) // releases the context; the Service has returned
	for _, c := range idle {
		close(c)
	}
	close(p.done)
	return err
}
