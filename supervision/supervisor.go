package supervision

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Spec configures a [Supervisor]. Its zero value is usable: every zero field
// means the documented default, filled in by [New].
type Spec struct {
	Name     string
	Strategy Strategy
	// MaxRestarts is N in "at most N failures within Window" (default 5; a
	// negative value means none: every failure exhausts the intensity).
	// The count is per child: each child has its own window (its
	// ChildRestartStats), unlike OTP, whose intensity counts the restarts of
	// all of a supervisor's children together. Per child, one flapping child
	// exhausts only its own intensity, and a sibling's failures never make a
	// healthy child's next failure escalate.
	MaxRestarts int
	// Window is W, the sliding window of the restart intensity (default
	// 10s). A failure at time t counts while now-t < Window, and only back
	// to the latest failure of an incarnation that made progress (see
	// "Restart intensity" in the package doc).
	Window time.Duration
	// HealthyAfter is the default of ChildSpec.HealthyAfter: an incarnation
	// that ran at least this long before it failed counts as having made
	// progress. Zero or negative: off, only [Progress] counts. Off by
	// default because only the child knows what progress is (a connection
	// that stays open while the broker blocks it confirms nothing), and
	// because a period of Window or more would change nothing for the child
	// itself: its earlier failures have already left the window.
	HealthyAfter    time.Duration
	Decider         Decider       // default DefaultDecider
	Backoff         Backoff       // see Backoff for its defaults; ResetAfter defaults to Window
	ShutdownTimeout time.Duration // per child, default 10s
	// EventHook is called synchronously from the supervisor goroutine for
	// every event; it must not block. nil means no events.
	EventHook func(Event)
	Clock     Clock // default RealClock()
}

// withDefaults fills in every default in one place.
func (s Spec) withDefaults() Spec {
	if s.MaxRestarts == 0 {
		s.MaxRestarts = 5
	} else if s.MaxRestarts < 0 {
		s.MaxRestarts = 0
	}
	if s.Window <= 0 {
		s.Window = 10 * time.Second
	}
	if s.Decider == nil {
		s.Decider = DefaultDecider
	}
	if s.Backoff.ResetAfter == 0 {
		s.Backoff.ResetAfter = s.Window
	}
	s.Backoff = s.Backoff.normalized()
	if s.ShutdownTimeout <= 0 {
		s.ShutdownTimeout = 10 * time.Second
	}
	if s.Clock == nil {
		s.Clock = RealClock()
	}
	return s
}

// Supervisor supervises a set of children; it is itself a [Service].
//
// Serve runs the supervisor loop, the only goroutine that touches the
// children's runtime state (the run struct). The fields below mu hold only
// what other goroutines touch too: the list of child specs (Add,
// BeforeRestart, Terminated), whether Serve runs, and the abandoned
// incarnations (their goroutines report their return here).
type Supervisor struct {
	spec Spec // defaults applied; immutable after New

	mu         sync.Mutex
	specs      []ChildSpec   // guarded by mu: children not removed for good, in Add order
	kick       chan struct{} // guarded by mu: non-nil while Serve runs; Add and a returning abandoned incarnation signal on it
	serving    bool          // guarded by mu
	terminated bool          // guarded by mu: children were terminated since the last Serve started
	// abandoned holds, by child name, the incarnation abandoned at its
	// shutdown timeout whose Serve has not returned yet (nor run the calls
	// queued for it); guarded by mu. At most one per name: a child is not
	// started again while it has one.
	abandoned map[string]*incarnation

	snap atomic.Pointer[published] // the loop's last published state, for Snapshot
}

// New returns a supervisor for spec, with defaults applied.
func New(spec Spec) *Supervisor {
	return &Supervisor{spec: spec.withDefaults()}
}

// Name returns Spec.Name.
func (s *Supervisor) Name() string { return s.spec.Name }

// Add adds a child. Before Serve it is started when Serve starts; during
// Serve it is started at once. Start order (and hence the strategies' notion
// of "later siblings" and the reverse shutdown order) is Add order. The name
// must be unique among the current children.
func (s *Supervisor) Add(c ChildSpec) error {
	if c.Service == nil {
		return errors.New("supervision: child has no Service")
	}
	if c.Name == "" {
		if n, ok := c.Service.(interface{ Name() string }); ok {
			c.Name = n.Name()
		}
	}
	if c.Name == "" {
		return errors.New("supervision: child has no Name")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.specs {
		if o.Name == c.Name {
			return fmt.Errorf("supervision: supervisor %q already has a child %q", s.spec.Name, c.Name)
		}
	}
	s.specs = append(s.specs, c)
	if s.kick != nil {
		select {
		case s.kick <- struct{}{}:
		default: // a kick is already pending; the loop scans all specs
		}
	}
	return nil
}

// BeforeRestart is called by a parent supervisor before it restarts this
// supervisor's subtree (so never while this supervisor's Serve runs); it
// forwards the call to every child (its BeforeRestart method and
// Hooks.BeforeRestart), so actors in the subtree start with fresh state. The
// call for a child whose abandoned Serve still runs is made on that child's
// goroutine once its Serve returns (see [ChildSpec]).
func (s *Supervisor) BeforeRestart(cause error) {
	s.mu.Lock()
	specs := slices.Clone(s.specs)
	s.mu.Unlock()
	for _, c := range specs {
		s.afterServe(c.Name, func() { callBeforeRestart(c, cause) })
	}
}

// Terminated is called by a parent supervisor when this supervisor is
// removed for good (e.g. its escalation was answered with Stop), so never
// while this supervisor's Serve runs; the owner of a root supervisor may call
// it after Serve returned, to end the tree for good. It terminates every
// child in reverse start order (Terminated, AfterStop, EventStop), so their
// mailboxes refuse further messages; the calls for a child whose abandoned
// Serve still runs are made on that child's goroutine once its Serve returns
// (see [ChildSpec]). It is a no-op if the children were already terminated
// by a shutdown.
func (s *Supervisor) Terminated(reason error) {
	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		return
	}
	s.terminated = true
	specs := slices.Clone(s.specs)
	s.mu.Unlock()
	for i := len(specs) - 1; i >= 0; i-- {
		c := specs[i]
		s.afterServe(c.Name, func() { callTerminated(c, reason) })
		s.emit(Event{Kind: EventStop, Child: c.Name, Err: reason})
	}
}

// afterServe runs f, a BeforeRestart or Terminated call for the child name,
// at once if no incarnation of that child is abandoned; otherwise it queues f
// for the abandoned incarnation's goroutine, which runs the queue right after
// its Serve returns (see served). Either way f never runs concurrently with
// the child's Serve, and the calls for one child keep their order.
func (s *Supervisor) afterServe(name string, f func()) {
	s.mu.Lock()
	if inc := s.abandoned[name]; inc != nil {
		inc.pending = append(inc.pending, f)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	f()
}

// abandon is called by the loop when inc did not return within its shutdown
// timeout. It reports false if Serve returned meanwhile (inc then ends on its
// own at once); else inc is recorded as abandoned and reports true.
func (s *Supervisor) abandon(inc *incarnation) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inc.returned {
		return false
	}
	inc.abandoned = true
	if s.abandoned == nil {
		s.abandoned = make(map[string]*incarnation)
	}
	s.abandoned[inc.name] = inc
	return true
}

// served is called by an incarnation's goroutine as soon as its Serve
// returned. For an incarnation the loop is still waiting for, it only
// records the return and reports false: the goroutine then reports to the
// loop. For an abandoned one it runs the calls queued for it, in order (more
// may be queued while it runs them), then removes the incarnation from the
// abandoned set, wakes the running Serve (if any) so a child waiting for this
// return can start, and reports true.
func (s *Supervisor) served(inc *incarnation) bool {
	s.mu.Lock()
	inc.returned = true
	if !inc.abandoned {
		s.mu.Unlock()
		return false
	}
	for len(inc.pending) > 0 {
		f := inc.pending[0]
		inc.pending = inc.pending[1:]
		s.mu.Unlock()
		f()
		s.mu.Lock()
	}
	delete(s.abandoned, inc.name)
	if s.kick != nil {
		select {
		case s.kick <- struct{}{}:
		default: // a kick is already pending; the loop rescans
		}
	}
	s.mu.Unlock()
	return true
}

// isAbandoned reports whether an incarnation of the child name is abandoned
// and has not finished yet.
func (s *Supervisor) isAbandoned(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abandoned[name] != nil
}

func (s *Supervisor) emit(e Event) {
	if s.spec.EventHook == nil {
		return
	}
	e.Time = s.spec.Clock.Now()
	e.Supervisor = s.spec.Name
	s.spec.EventHook(e)
}

func callBeforeRestart(c ChildSpec, cause error) {
	if br, ok := c.Service.(interface{ BeforeRestart(error) }); ok {
		br.BeforeRestart(cause)
	}
	if c.Hooks.BeforeRestart != nil {
		c.Hooks.BeforeRestart(cause)
	}
}

func callTerminated(c ChildSpec, reason error) {
	if t, ok := c.Service.(interface{ Terminated(error) }); ok {
		t.Terminated(reason)
	}
	if c.Hooks.AfterStop != nil {
		c.Hooks.AfterStop(reason)
	}
}

// Serve runs the supervisor until ctx is cancelled (it then stops the
// children in reverse start order and returns ctx.Err()) or a child's
// failure is escalated (it stops the children and returns an
// *EscalationError). Each Serve call starts the children afresh, with new
// restart statistics; a concurrent second call fails at once.
func (s *Supervisor) Serve(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errAlreadyServing
	}
	s.serving, s.kick, s.terminated = true, kick, false
	specs := slices.Clone(s.specs)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.serving, s.kick = false, nil
		s.mu.Unlock()
	}()

	r := &run{
		s:     s,
		spec:  &s.spec,
		ctx:   ctx,
		exits: make(chan *incarnation),
		kick:  kick,
	}
	for _, c := range specs {
		r.children = append(r.children, r.newChild(c))
	}
	if ctx.Err() == nil {
		for _, c := range r.children {
			r.start(c)
		}
	}
	defer r.publish(true)
	return r.loop()
}

// run is the state of one Serve call, owned by its goroutine.
type run struct {
	s        *Supervisor
	spec     *Spec
	ctx      context.Context
	children []*child // start order
	exits    chan *incarnation
	kick     chan struct{}
	wake     Timer // fires at the earliest due restart; nil when none
	wakeAt   time.Time
}

type child struct {
	spec     ChildSpec
	shutdown time.Duration
	healthy  time.Duration // HealthyAfter with the default applied; <= 0: off

	cur *incarnation // non-nil while running

	waiting bool      // a restart is scheduled at due
	due     time.Time // when waiting
	blocked bool      // waiting, due, and start found an abandoned incarnation: start again on the next kick
	restart bool      // the next start is a restart: call BeforeRestart(cause) first
	cause   error

	failures      []time.Time // failure times inside the window, oldest first
	totalRestarts int
	attempt       int // consecutive restarts, for the backoff
	lastUptime    time.Duration
	progressed    bool // the incarnation that failed last made progress
	lastErr       error
}

// incarnation is one run of a child's Serve in its own goroutine.
type incarnation struct {
	child    *child // touched by the loop only
	name     string // child's name, immutable, for the goroutine
	start    time.Time
	cancel   context.CancelCauseFunc
	progress *progress     // set by Progress, read by the loop at exit
	proc     *Process      // the incarnation as a party others may link to
	quit     chan struct{} // closed by the loop when it stops the child itself and no longer wants the exit report
	done     chan struct{} // closed by the child goroutine as its last act

	// Written by the child goroutine before it reports or closes done.
	err   error
	stack []byte

	// Guarded by the Supervisor's mu.
	returned  bool     // Serve has returned
	abandoned bool     // the loop stopped waiting for it (EventStopTimeout)
	pending   []func() // BeforeRestart/Terminated calls queued while abandoned; run by its goroutine after Serve returns
}

func (r *run) newChild(c ChildSpec) *child {
	sd := c.ShutdownTimeout
	if sd <= 0 {
		sd = r.spec.ShutdownTimeout
	}
	healthy := c.HealthyAfter
	if healthy == 0 {
		healthy = r.spec.HealthyAfter
	}
	return &child{spec: c, shutdown: sd, healthy: healthy}
}

func (c *child) stats() ChildRestartStats {
	st := ChildRestartStats{
		Failures:      len(c.failures),
		TotalRestarts: c.totalRestarts,
		LastUptime:    c.lastUptime,
		Progressed:    c.progressed,
	}
	if n := len(c.failures); n > 0 {
		st.FirstFailure = c.failures[0]
		st.LastFailure = c.failures[n-1]
	}
	return st
}

// recordFailure adds a failure at now and prunes the failures that left the
// window: those with now-t >= window, and all earlier ones when the failed
// incarnation made progress (its failure starts a fresh window).
func (c *child) recordFailure(now time.Time, window time.Duration, progressed bool) {
	c.progressed = progressed
	if progressed {
		c.failures = c.failures[:0]
	}
	c.failures = append(c.failures, now)
	i := 0
	for i < len(c.failures) && now.Sub(c.failures[i]) >= window {
		i++
	}
	c.failures = c.failures[i:]
}

func (r *run) emit(e Event) { r.s.emit(e) }

func (r *run) loop() error {
	for {
		r.publish(false)
		var wakeC <-chan time.Time
		if r.wake != nil {
			wakeC = r.wake.C()
		}
		select {
		case <-r.ctx.Done():
			r.shutdown()
			return r.ctx.Err()
		case inc := <-r.exits:
			if err := r.handleExit(inc); err != nil {
				return err
			}
		case <-wakeC:
			r.wake = nil
			r.startDue()
		case <-r.kick:
			r.addNew()
			r.unblock()
		}
	}
}

// start runs a new incarnation of c, unless an earlier incarnation of c was
// abandoned and still runs: then c stays waiting, blocked, and the kick sent
// when that incarnation returns starts it (unblock).
func (r *run) start(c *child) {
	if r.s.isAbandoned(c.spec.Name) {
		c.waiting, c.blocked = true, true // out of the wake timer's schedule
		return
	}
	if c.restart {
		c.restart = false
		callBeforeRestart(c.spec, c.cause)
	}
	c.waiting, c.blocked, c.cause = false, false, nil
	if c.spec.Hooks.BeforeStart != nil {
		c.spec.Hooks.BeforeStart()
	}
	// Not derived from r.ctx: on shutdown the loop cancels children one by
	// one in reverse start order, each awaited, instead of all at once. The
	// values are inherited, so the progress marker chains to this
	// supervisor's own.
	p := &progress{parent: progressOf(r.ctx)}
	ctx, cancel := context.WithCancelCause(context.WithValue(context.WithoutCancel(r.ctx), progressKey{}, p))
	proc := newProcess(c.spec.Name, cancel)
	ctx = context.WithValue(ctx, processKey{}, proc)
	inc := &incarnation{
		child:    c,
		name:     c.spec.Name,
		start:    r.spec.Clock.Now(),
		cancel:   cancel,
		progress: p,
		proc:     proc,
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	c.cur = inc
	r.emit(Event{Kind: EventStart, Child: c.spec.Name, Stats: c.stats()})
	svc, exits, s := c.spec.Service, r.exits, r.s
	r.publish(false) // before Serve: whatever the child does follows its snapshot
	go func() {
		defer close(inc.done)
		inc.err, inc.stack = serveRecover(ctx, svc)
		inc.err = proc.exit(inc.err) // a linked exit's reason when one ended it
		if s.served(inc) {
			return // abandoned: nobody waits for the report
		}
		select {
		case exits <- inc:
		case <-inc.quit:
		}
	}()
}

// unblock starts, in start order, the blocked children whose abandoned
// incarnation has returned.
func (r *run) unblock() {
	for _, c := range slices.Clone(r.children) {
		if c.blocked && r.ctx.Err() == nil && !r.s.isAbandoned(c.spec.Name) {
			r.start(c)
		}
	}
	r.reschedule()
}

func serveRecover(ctx context.Context, svc Service) (err error, stack []byte) {
	defer func() {
		if v := recover(); v != nil {
			stack = debug.Stack()
			err = &PanicError{Value: v, Stack: stack}
		}
	}()
	return svc.Serve(ctx), nil
}

// handleExit processes the exit report of an incarnation that ended on its
// own. A non-nil result is the escalation Serve must return.
func (r *run) handleExit(inc *incarnation) error {
	<-inc.done // the goroutine ends right after its report
	c := inc.child
	if c.cur != inc {
		return nil // stale: the loop stopped this incarnation itself
	}
	c.cur = nil
	inc.cancel(nil)
	now := r.spec.Clock.Now()
	c.lastUptime = now.Sub(inc.start)
	if r.ctx.Err() != nil {
		return nil // shutting down; the loop's next turn handles it
	}
	err := inc.err
	if err == nil {
		if c.spec.Restart != Permanent {
			r.remove(c, nil) // a transient or temporary child finished its job
			return nil
		}
		err = ErrUnexpectedReturn
	}
	progressed := inc.progress.madeProgress()
	if !progressed && c.healthy > 0 && c.lastUptime >= c.healthy {
		progressed = true
		inc.progress.mark() // a healthy run is progress for the ancestors too
	}
	c.recordFailure(now, r.spec.Window, progressed)
	c.lastErr = err
	f := Failure{
		Supervisor: r.spec.Name,
		Child:      c.spec.Name,
		Err:        err,
		Stats:      c.stats(),
		Stack:      inc.stack,
	}
	f.Exhausted = f.Stats.Failures > r.spec.MaxRestarts
	var d Directive
	if c.spec.Restart == Temporary {
		d = Stop
	} else {
		d = r.spec.Decider(f)
		if d < Resume || d > Escalate {
			d = DefaultDecider(f)
		}
	}
	r.emit(Event{Kind: EventFailure, Child: f.Child, Err: err, Directive: d, Stats: f.Stats, Stack: f.Stack})
	switch d {
	case Resume:
		r.emit(Event{Kind: EventResume, Child: f.Child, Err: err, Stats: f.Stats})
		r.start(c)
	case Restart:
		r.restart(c, err)
	case Stop:
		r.remove(c, err)
	case Escalate:
		r.emit(Event{Kind: EventEscalation, Child: f.Child, Err: err, Stats: f.Stats, Stack: f.Stack})
		r.stopAll(errStopForRestart)
		return &EscalationError{Supervisor: r.spec.Name, Child: f.Child, Err: err}
	}
	return nil
}

// restart carries out a Restart of the failed child c: the strategy names
// the group, the running siblings in it are stopped in reverse start order,
// and all of the group is scheduled to start, in start order, after the
// backoff delay of c's attempt.
func (r *run) restart(c *child, cause error) {
	if ra := r.spec.Backoff.ResetAfter; c.progressed || (ra >= 0 && c.lastUptime >= ra) {
		c.attempt = 0
	}
	delay := r.spec.Backoff.delay(c.attempt) // Backoff was normalized by New
	c.attempt++

	idx := slices.Index(r.children, c)
	var group []*child
	switch r.spec.Strategy {
	case OneForAll:
		group = r.children
	case RestForOne:
		group = r.children[idx:]
	default:
		group = r.children[idx : idx+1]
	}
	group = slices.Clone(group)
	for i := len(group) - 1; i >= 0; i-- {
		if g := group[i]; g != c && g.cur != nil {
			r.stop(g, errStopForRestart)
		}
	}
	due := r.spec.Clock.Now().Add(delay)
	for _, g := range group {
		g.waiting, g.due, g.blocked = true, due, false
		g.restart, g.cause = true, cause
		g.totalRestarts++
		r.emit(Event{Kind: EventRestart, Child: g.spec.Name, Err: cause, Stats: g.stats(), Delay: delay})
	}
	r.reschedule()
}

// reschedule points the wake timer at the earliest due restart.
func (r *run) reschedule() {
	var next time.Time
	found := false
	for _, c := range r.children {
		if c.waiting && !c.blocked && (!found || c.due.Before(next)) {
			next, found = c.due, true
		}
	}
	if r.wake != nil {
		if found && next.Equal(r.wakeAt) {
			return
		}
		r.wake.Stop()
		r.wake = nil
	}
	if found {
		r.wakeAt = next
		r.wake = r.spec.Clock.NewTimer(next.Sub(r.spec.Clock.Now()))
	}
}

// startDue starts, in start order, every child whose restart is due.
func (r *run) startDue() {
	now := r.spec.Clock.Now()
	for _, c := range slices.Clone(r.children) {
		if c.waiting && !c.blocked && !c.due.After(now) && r.ctx.Err() == nil {
			r.start(c)
		}
	}
	r.reschedule()
}

// addNew starts the children added during Serve.
func (r *run) addNew() {
	r.s.mu.Lock()
	specs := slices.Clone(r.s.specs)
	r.s.mu.Unlock()
	for _, sp := range specs {
		if slices.ContainsFunc(r.children, func(c *child) bool { return c.spec.Name == sp.Name }) {
			continue
		}
		c := r.newChild(sp)
		r.children = append(r.children, c)
		if r.ctx.Err() == nil {
			r.start(c)
		}
	}
}

// remove removes a child that is not running for good: it will never be
// started again by this supervisor, nor by a later Serve call.
func (r *run) remove(c *child, reason error) {
	r.children = slices.DeleteFunc(r.children, func(o *child) bool { return o == c })
	r.s.mu.Lock()
	r.s.specs = slices.DeleteFunc(r.s.specs, func(o ChildSpec) bool { return o.Name == c.spec.Name })
	r.s.mu.Unlock()
	if c.waiting {
		c.waiting, c.blocked = false, false
		r.reschedule()
	}
	spec := c.spec
	r.s.afterServe(spec.Name, func() { callTerminated(spec, reason) })
	r.emit(Event{Kind: EventStop, Child: c.spec.Name, Err: reason, Stats: c.stats()})
}

// stop cancels a running child and waits for it for at most its shutdown
// timeout. A child that ignores its context is reported and abandoned: its
// goroutine outlives the wait until its Serve returns, then runs the calls
// queued for it meanwhile (see served) and ends without reporting.
func (r *run) stop(c *child, cause error) {
	inc := c.cur
	c.cur = nil
	inc.cancel(cause)
	close(inc.quit)
	t := r.spec.Clock.NewTimer(c.shutdown)
	select {
	case <-inc.done:
		t.Stop()
	case <-t.C():
		if r.s.abandon(inc) {
			r.emit(Event{Kind: EventStopTimeout, Child: c.spec.Name, Err: cause, Stats: c.stats()})
		} else {
			<-inc.done // Serve returned just now; quit is closed, so it ends at once
		}
	}
	c.lastUptime = r.spec.Clock.Now().Sub(inc.start)
}

// stopAll stops every running child in reverse start order and cancels the
// pending restarts.
func (r *run) stopAll(cause error) {
	for i := len(r.children) - 1; i >= 0; i-- {
		if c := r.children[i]; c.cur != nil {
			r.stop(c, cause)
		}
	}
	if r.wake != nil {
		r.wake.Stop()
		r.wake = nil
	}
}

// shutdown handles the cancellation of the supervisor's context. Unless the
// parent stopped this supervisor only to restart it (errStopForRestart), the
// children are stopped for good: Terminated, AfterStop and EventStop, in
// reverse start order.
func (r *run) shutdown() {
	cause := context.Cause(r.ctx)
	r.stopAll(cause)
	// Stopped to be restarted, or ended by a linked party's exit (a failure
	// its parent decides on): the subtree keeps its mailboxes.
	var exit *ExitError
	if errors.Is(cause, errStopForRestart) || errors.As(cause, &exit) {
		return
	}
	r.s.mu.Lock()
	already := r.s.terminated
	r.s.terminated = true
	r.s.mu.Unlock()
	if already {
		return
	}
	for i := len(r.children) - 1; i >= 0; i-- {
		c := r.children[i]
		c.waiting, c.blocked = false, false
		spec := c.spec
		r.s.afterServe(spec.Name, func() { callTerminated(spec, cause) })
		r.emit(Event{Kind: EventStop, Child: c.spec.Name, Err: cause, Stats: c.stats()})
	}
}
