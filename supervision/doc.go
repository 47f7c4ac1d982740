// Package supervision is a small supervision library in the style of
// thejerf/suture v4 and Erlang/OTP: supervisors restart failed children
// according to a strategy, a restart intensity and a decider, and a
// supervisor is itself a [Service], so trees compose.
//
// # Ownership
//
// The state of one [Supervisor.Serve] call (the children, their restart
// statistics, backoff timers, the incarnation running for each child) lives
// in one run value owned by the goroutine running Serve, and only that
// goroutine starts and stops children. Each child's Serve runs in a
// goroutine of its own, which reports its exit to the loop over a channel;
// backoff timers feed the same loop.
//
// A few fields are shared with other goroutines and guarded by the
// Supervisor's mutex: the list of child specs (appended by [Supervisor.Add],
// read by [Supervisor.BeforeRestart] and [Supervisor.Terminated] on a
// parent's goroutine, pruned by the loop when a child is removed for good),
// whether Serve runs, whether the children were terminated, and the
// incarnations abandoned at a shutdown timeout with the calls queued for
// them (written by the loop, by Supervisor.BeforeRestart/Terminated and by
// the abandoned incarnation's goroutine when its Serve returns). Add and a
// returning abandoned incarnation wake the loop through a channel; the loop
// then rescans. The mutex is never held while user code (a Service method, a
// hook, the EventHook or the Decider) runs.
//
// A child's progress marker (see [Progress]) is an atomic flag set from any
// goroutine and read by the loop when the incarnation exits.
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
// Restart intensity is "at most Spec.MaxRestarts failures without progress
// within Spec.Window", counted per child. On each failure of a child the
// supervisor records the failure time t and counts, in
// [ChildRestartStats].Failures:
//
//   - If the failed incarnation made progress (it called [Progress] with its
//     Serve context, a child of a sub-supervisor did so with its own, or it
//     ran at least its HealthyAfter period before failing): this failure
//     alone. The earlier failures are forgotten, the window starts afresh at
//     t, and Stats.Progressed is true.
//   - Otherwise: this failure plus every earlier one still in the window
//     (a failure at t' counts while t-t' < Window) and not older than the
//     latest failure that followed progress.
//
// [Failure.Exhausted] is Stats.Failures > MaxRestarts, and [DefaultDecider]
// escalates then. So a child whose every incarnation makes progress before
// it fails (a publisher whose connection a flapping load balancer cuts after
// it confirmed messages) is restarted indefinitely; a child failing at start
// (refused dials) escalates at its MaxRestarts+1-th failure within Window, as
// does a child that fails MaxRestarts more times without progress after its
// last failure with progress (that failure is the first of the new window).
// The intensity counts failures, not restarts: a Resume or a Stop decision
// counts the same, and a stop by the supervisor itself (a sibling's restart,
// shutdown) is no failure.
//
// Progress marks the incarnation and its ancestors, so at a parent a
// sub-supervisor's failure (its escalation) counts as a failure with
// progress when any child in that sub-supervisor incarnation made progress:
// a tree root > broker > publisher gives up only when a whole broker
// incarnation made none. HealthyAfter marks the ancestors the same way when
// it applies, at the failure.
//
// Backoff: the delay before a restart is [Backoff.Delay](attempt), where
// attempt counts consecutive restarts of the child and starts again from 0
// (the delay from Backoff.Min) after an incarnation that made progress or
// that ran at least Backoff.ResetAfter (default Window).
//
// This differs from OTP, where the intensity counts the restarts of all of a
// supervisor's children together and knows no progress: here each child has
// its own window (its ChildRestartStats), so one flapping child exhausts only
// its own intensity and never charges its siblings. A supervisor that wants
// OTP's shared count can sum its children's stats in its Decider. A child
// that never calls Progress, under a Spec without HealthyAfter, is counted
// by the plain sliding window, exactly as before progress existed.
//
// # Links, monitors and exit traps
//
// A [Process] is a party others can link to and monitor: every incarnation
// of a supervised child is one (its Serve reaches it with [Self]), and
// [Spawn] starts one outside any supervisor. The semantics are Erlang's, as
// the seed "Fault-tolerance primitives in Scala: links and traps" describes
// them:
//
//   - A link ([Process.Link]) is bidirectional. When one party exits
//     abnormally (a non-nil reason: an error, a recovered panic, a
//     cancelled context), the other is ended with the same reason (its
//     context is cancelled with an [*ExitError] cause, and its reason is
//     that reason whatever its Serve then returns), and so on along its own
//     links. A normal exit (Serve returned nil) ends nobody.
//   - A party that traps exits ([Process.TrapExits]) is never ended by a
//     link: it receives an [Exit] signal naming who exited and why (normal
//     exits included), through [Process.Receive] or, for an [Actor] whose
//     receiver is a [SignalReceiver], ReceiveSignal.
//   - A monitor ([Process.Monitor]) is one-way: the monitor receives one
//     [Down] signal with the reason and is never ended by it.
//   - Linking to or monitoring a party that has already exited delivers
//     the notice at once: no notice is lost to a race between the two.
//     [Process.Unlink] and [Process.Demonitor] take them back (after
//     Demonitor, no Down for it is received, even one already queued).
//   - [Process.Kill] is Erlang's exit(Pid, Reason): an exit signal from no
//     party.
//
// A supervisor is a party trapping its children's exits and linked to each
// of them: a child's exit reaches the supervisor's loop as a message (the
// exit report of the child's goroutine) instead of ending it, and the
// supervisor's end ends its children (their contexts). It is not built on
// Link, because that would make nothing simpler: the loop already owns the
// child goroutines it starts and receives their exits on a channel it
// selects on together with its timers; links would add a signal queue the
// loop must drain, and the other direction of a link (the children die with
// the supervisor) would still need the ordered, timed, reverse-order stop
// that contexts give. Each incarnation is still a Process, so user code can
// link a supervised child to anything: when a linked party dies abnormally,
// the child is ended with that reason, which is the failure its supervisor
// handles. A sub-supervisor ended that way (a link, or Kill on its process
// from a [ChildInfo]) stops its children without terminating them, like an
// escalation: its parent decides, and a restart starts the subtree afresh
// with its mailboxes intact.
//
// # Snapshots
//
// [Supervisor.Snapshot] (and OTP's [Supervisor.WhichChildren] and
// [Supervisor.CountChildren]) report each child's name, state (running,
// restarting, stopped), restart type, [ChildRestartStats], last failure,
// next restart time and running process, nested for sub-supervisors. Each
// loop publishes an immutable copy after every step it takes and when its
// child is about to start, so a snapshot is safe from any goroutine and
// never waits for a loop busy stopping a child.
//
// # Shutdown and goroutines
//
// When the context given to Serve is cancelled, children are stopped in
// reverse start order, each awaited for at most its shutdown timeout, then
// terminated (Terminated, AfterStop, EventStop) in reverse start order; Serve
// then returns. So Serve returns within the sum of its running children's
// shutdown timeouts (plus the time the hooks and Terminated methods called
// on its goroutine take), whatever the children do.
//
// Serve returns only once every goroutine it started has ended, with one
// exception: a child that ignores its context past its shutdown timeout is
// reported with [EventStopTimeout] and abandoned (on shutdown, a sibling's
// restart or an escalation alike). Its goroutine, and only it, may outlive
// Serve: it lives until the child's Serve returns, then makes the
// BeforeRestart and Terminated calls (with their hooks) that became due
// meanwhile, in order, on itself, wakes the running Serve of this supervisor
// if there is one, and ends; it touches nothing else of the supervisor's
// (in particular it reports no failure: the stop was the supervisor's
// decision, and the EventStopTimeout has been emitted). Until then the child
// is not started again, by this Serve call or a later one: the restart waits
// for that return. See [ChildSpec] for who calls a child's methods, when and
// where.
package supervision
