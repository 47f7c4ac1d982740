package supervision

import (
	"context"
	"fmt"
	"time"
)

// Service is the child contract. Serve blocks until ctx is cancelled (it then
// returns ctx.Err() or nil) or the child fails (it returns a non-nil error).
// A child must not rely on state left by an earlier incarnation: it sets
// itself up on every start.
type Service interface {
	Serve(ctx context.Context) error
}

// ServiceFunc adapts a function to [Service].
type ServiceFunc func(ctx context.Context) error

// Serve calls f(ctx).
func (f ServiceFunc) Serve(ctx context.Context) error { return f(ctx) }

// Directive is what a [Decider] chooses for a failed child. The zero value is
// invalid and means "use [DefaultDecider]".
type Directive int

const (
	// Resume calls the child's Serve again at once, keeping its state.
	Resume Directive = iota + 1
	// Restart restarts the child (and the siblings named by the strategy)
	// after a backoff delay, with fresh state.
	Restart
	// Stop removes the child for good.
	Stop
	// Escalate stops the supervisor and hands the failure to its parent.
	Escalate
)

func (d Directive) String() string {
	switch d {
	case Resume:
		return "resume"
	case Restart:
		return "restart"
	case Stop:
		return "stop"
	case Escalate:
		return "escalate"
	}
	return fmt.Sprintf("Directive(%d)", int(d))
}

// Strategy says which children are restarted when one child is restarted.
type Strategy int

const (
	// OneForOne restarts only the failed child.
	OneForOne Strategy = iota
	// OneForAll stops all other children (reverse start order) and restarts
	// all of them in start order.
	OneForAll
	// RestForOne stops the children started after the failed one (reverse
	// order) and restarts it and them in start order.
	RestForOne
)

func (s Strategy) String() string {
	switch s {
	case OneForOne:
		return "one-for-one"
	case OneForAll:
		return "one-for-all"
	case RestForOne:
		return "rest-for-one"
	}
	return fmt.Sprintf("Strategy(%d)", int(s))
}

// RestartType says when a child is restarted at all.
type RestartType int

const (
	// Permanent children are always subject to the decider; returning nil is
	// a failure ([ErrUnexpectedReturn]).
	Permanent RestartType = iota
	// Transient children are subject to the decider only after a failure (a
	// non-nil error or a panic); returning nil ends them for good.
	Transient
	// Temporary children are never restarted: any exit, failure or not,
	// removes them (a failure is still reported with [EventFailure] and
	// Directive Stop; the decider is not asked).
	Temporary
)

func (r RestartType) String() string {
	switch r {
	case Permanent:
		return "permanent"
	case Transient:
		return "transient"
	case Temporary:
		return "temporary"
	}
	return fmt.Sprintf("RestartType(%d)", int(r))
}

// ChildRestartStats are one child's restart statistics. They live as long as
// the supervisor's current Serve call: when a sub-supervisor is restarted by
// its parent, its children start with fresh statistics.
type ChildRestartStats struct {
	// Failures counts the failures inside the current window, this one
	// included: failures within Spec.Window, back to (and including) the
	// latest failure of an incarnation that made progress. So it is 1 for a
	// failure that followed progress.
	Failures      int
	TotalRestarts int           // restarts over the child's whole life under this supervisor incarnation
	FirstFailure  time.Time     // oldest failure still inside the window
	LastFailure   time.Time     // the latest failure
	LastUptime    time.Duration // how long the incarnation that just failed (or was last stopped) ran
	// Progressed reports whether the incarnation that just failed made
	// progress: it called [Progress] (itself or a descendant in its subtree),
	// or it ran at least its HealthyAfter period. Its failure then started a
	// fresh window and a fresh backoff.
	Progressed bool
}

// Failure is what a [Decider] sees.
type Failure struct {
	Supervisor string
	Child      string
	Err        error
	// Stats are the child's statistics with this failure counted; a custom
	// Decider may use Stats.Progressed, Stats.LastUptime and the rest to
	// decide differently from DefaultDecider.
	Stats     ChildRestartStats
	Exhausted bool   // Stats.Failures > Spec.MaxRestarts
	Stack     []byte // non-nil when the failure was a panic
}

// Decider chooses what to do with a failed child. It runs on the
// supervisor's goroutine and must not block. Returning an invalid Directive
// (e.g. the zero value) means "do what DefaultDecider does".
type Decider func(Failure) Directive

// DefaultDecider escalates when the restart intensity is exhausted and
// restarts otherwise. Escalation rather than Stop is the default so that a
// child is never silently lost: the parent decides, and the root's parent is
// the process supervisor (the container runtime).
func DefaultDecider(f Failure) Directive {
	if f.Exhausted {
		return Escalate
	}
	return Restart
}

// EventKind is the kind of an [Event].
type EventKind int

const (
	EventStart       EventKind = iota + 1 // a child's Serve was started
	EventFailure                          // a child failed; Directive is the decision
	EventRestart                          // a restart was scheduled after Delay
	EventResume                           // a child is resumed (Serve called again at once)
	EventEscalation                       // the supervisor escalates Child's failure
	EventStop                             // a child was removed for good; Err is the reason
	EventStopTimeout                      // a child did not return within its shutdown timeout
)

func (k EventKind) String() string {
	switch k {
	case EventStart:
		return "start"
	case EventFailure:
		return "failure"
	case EventRestart:
		return "restart"
	case EventResume:
		return "resume"
	case EventEscalation:
		return "escalation"
	case EventStop:
		return "stop"
	case EventStopTimeout:
		return "stop-timeout"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one entry of a supervisor's event stream, delivered to
// Spec.EventHook. Metrics and logs subscribe through the hook, so this
// package imports neither.
type Event struct {
	Kind       EventKind
	Time       time.Time
	Supervisor string
	Child      string
	Err        error     // the failure (or stop reason)
	Directive  Directive // for EventFailure: what the decider chose
	Stats      ChildRestartStats
	Delay      time.Duration // for EventRestart: backoff delay applied
	Stack      []byte
}

// Hooks are a child's lifecycle callbacks. They must not block. BeforeStart
// runs on the supervisor's goroutine, just before Serve is started.
// BeforeRestart and AfterStop run right after the Service's BeforeRestart and
// Terminated methods (when it has them), on the same goroutine, under the
// same rules: see [ChildSpec].
type Hooks struct {
	BeforeStart   func()             // before every Serve call of the child
	BeforeRestart func(cause error)  // before a restart (not a resume) with the failure; after the method of the same name
	AfterStop     func(reason error) // when the child is stopped for good; after the Terminated method
}

// ChildSpec describes one child of a supervisor.
//
// Besides Hooks, the supervisor calls two optional methods of Service:
// BeforeRestart(cause error), before a Restart (not a Resume), and
// Terminated(reason error), when the child is removed for good (Stop
// directive, temporary child exit, transient child normal exit, shutdown of
// the tree, or [Supervisor.Terminated] of the supervisor holding it).
// Terminated is not called when the supervisor escalates: the parent may
// restart the subtree, whose mailboxes must keep their messages.
//
// Neither method (nor Hooks.BeforeRestart or Hooks.AfterStop) ever runs
// concurrently with the child's Serve, and no Serve of a child starts before
// the previous one returned. Who calls them, and on which goroutine:
//
//   - Normally the child's last Serve has returned when the call is due, and
//     the call is made at once: by the supervisor's Serve goroutine (a
//     restart, a Stop, an exit for good, the shutdown of the tree), or by the
//     goroutine calling [Supervisor.BeforeRestart] or [Supervisor.Terminated]
//     (a parent supervisor forwarding down its subtree).
//   - A child that ignored its context past its ShutdownTimeout was
//     abandoned (EventStopTimeout) and its Serve may still run. Calls due
//     meanwhile are queued, in order, and made on the child's own goroutine
//     right after its Serve returns; none is lost and none runs before. The
//     event that announces the decision (EventStop) is still emitted at once,
//     on the supervisor's goroutine. A restart of such a child (by this Serve
//     call or a later one) waits for that Serve to return as well.
//
// So Serve, BeforeRestart and Terminated of one child may share state
// without locks, as long as the child's own goroutines (those Serve starts)
// end before Serve returns.
//
// Each incarnation is a [Process] (its Serve reaches it with [Self]): other
// parties may link to it or monitor it, and a linked party's abnormal exit
// ends it with that reason, which is then its failure.
type ChildSpec struct {
	// Name identifies the child in events and errors; it must be unique
	// within the supervisor. When empty, the Service's Name() string
	// method (a *Supervisor has one) is used.
	Name            string
	Service         Service
	Restart         RestartType
	ShutdownTimeout time.Duration // default Spec.ShutdownTimeout
	// HealthyAfter: an incarnation that ran at least this long before it
	// failed counts as having made progress, as if it had called
	// [Progress]. Zero means Spec.HealthyAfter; negative means never (only
	// Progress counts).
	HealthyAfter time.Duration
	Hooks        Hooks
}
