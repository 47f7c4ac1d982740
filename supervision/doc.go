// Package supervision is a small supervision library in the style of
// thejerf/suture v4 and Erlang/OTP: supervisors restart failed children
// according to a strategy, a restart intensity and a decider, and a
// supervisor is itself a [Service], so trees compose.
//
// # Ownership
//
// All state of a [Supervisor] is owned by the goroutine running
// [Supervisor.Serve]. Each child runs in its own goroutine and reports its
// exit to that loop over a channel; backoff timers feed the same loop. The
// loop is the only place where children are started and stopped, so no
// locking is needed for the restart statistics. [Supervisor.Add] talks to the
// loop through a channel as well.
//
// # Failures and decisions
//
// A child fails when its Serve returns a non-nil error while its context is
// not cancelled, when a [Permanent] child returns nil (see
// [ErrUnexpectedReturn]), or when it panics (the panic is recovered and
// reported as a [*PanicError] with the stack). On every failure the
// supervisor updates the child's [ChildRestartStats], asks the [Decider] and
// carries out the returned [Directive]:
//
//   - [Resume]: Serve is called again at once, with no backoff and no
//     BeforeRestart. An [Actor] keeps its receiver (its state).
//   - [Restart]: after a backoff delay ([Backoff.Delay]) the child, and the
//     siblings its [Strategy] names, are restarted. BeforeRestart is called
//     first, so an [Actor] builds a fresh receiver.
//   - [Stop]: the child is removed for good and never re-created;
//     Terminated is called, so an [Actor]'s mailbox refuses further messages
//     with [ErrStopped]. Stop-and-recreate-on-next-message loops are
//     impossible by construction.
//   - [Escalate]: the supervisor stops all its children (without calling
//     Terminated, so mailboxes keep their messages) and returns an
//     [*EscalationError] from Serve; the parent then handles it as a failure
//     of its own child.
//
// # Restart intensity
//
// Restart intensity is "at most Spec.MaxRestarts failures within
// Spec.Window", measured per child over a sliding window: a failure at time t
// counts while now-t < Window. [Failure.Exhausted] is
// Stats.Failures > MaxRestarts, and [DefaultDecider] escalates then. This
// differs from OTP, where the intensity counts the restarts of all of a
// supervisor's children together: here each child has its own window (its
// [ChildRestartStats]), so one flapping child exhausts only its own intensity
// and never charges its siblings. A supervisor that wants OTP's shared count
// can sum its children's stats in its Decider.
//
// # Shutdown
//
// When the context given to Serve is cancelled, children are stopped in
// reverse start order, each awaited for at most its shutdown timeout; a child
// that ignores its context past that timeout is reported with
// [EventStopTimeout] and abandoned: its goroutine is the only one that may
// outlive Serve, and it ends as soon as the child's Serve returns.
package supervision
