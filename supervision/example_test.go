package supervision_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/publisher-dev/publisher/supervision"
)

// printer is an actor's state; "crash" fails the incarnation.
type printer struct {
	incarnation int
	done        chan struct{}
}

func (p *printer) Receive(_ context.Context, msg string) error {
	if msg == "crash" {
		fmt.Printf("incarnation %d: %s -> failing\n", p.incarnation, msg)
		return errors.New("crashed")
	}
	fmt.Printf("incarnation %d: %s\n", p.incarnation, msg)
	if msg == "last" {
		close(p.done)
	}
	return nil
}

// A supervised actor crashes; the messages queued behind the crash stay in
// its mailbox and are processed, in order, by the next incarnation, which has
// fresh state. Callers keep the same *Actor throughout.
func ExampleActor() {
	done := make(chan struct{})
	n := 0
	actor := supervision.NewActor(16, func() supervision.Receiver[string] {
		n++
		return &printer{incarnation: n, done: done}
	})
	for _, m := range []string{"first", "crash", "second", "last"} {
		_ = actor.Send(m) // queued before the actor even runs
	}

	sup := supervision.New(supervision.Spec{
		Name:    "root",
		Backoff: supervision.Backoff{Min: -1}, // restart without delay
		EventHook: func(e supervision.Event) {
			if e.Kind == supervision.EventRestart {
				fmt.Printf("event: %s of %s after %v\n", e.Kind, e.Child, e.Err)
			}
		},
	})
	_ = sup.Add(supervision.ChildSpec{Name: "printer", Service: actor})

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- sup.Serve(ctx) }()
	<-done
	cancel()
	fmt.Println("serve:", <-errc)
	fmt.Println("send after shutdown:", actor.Send("late"))
	// Output:
	// incarnation 1: first
	// incarnation 1: crash -> failing
	// event: restart of printer after crashed
	// incarnation 2: second
	// incarnation 2: last
	// serve: context canceled
	// send after shutdown: supervision: actor stopped
}

// A child keeps failing; its supervisor exhausts its restart intensity and
// escalates. The root's decider sees the original error through the
// EscalationError and decides for the whole subtree.
func ExampleSupervisor_escalation() {
	errDisk := errors.New("disk full")

	broker := supervision.New(supervision.Spec{
		Name:        "broker",
		MaxRestarts: 2, // the third failure within the window escalates
		Backoff:     supervision.Backoff{Min: -1},
	})
	_ = broker.Add(supervision.ChildSpec{
		Name:    "worker",
		Service: supervision.ServiceFunc(func(context.Context) error { return errDisk }),
	})

	root := supervision.New(supervision.Spec{
		Name: "root",
		Decider: func(f supervision.Failure) supervision.Directive {
			var esc *supervision.EscalationError
			if errors.As(f.Err, &esc) {
				fmt.Printf("root: child %q escalated (%s gave up on %s): disk full? %v\n",
					f.Child, esc.Supervisor, esc.Child, errors.Is(f.Err, errDisk))
			}
			return supervision.Escalate // give up: let the process exit
		},
	})
	_ = root.Add(supervision.ChildSpec{Service: broker}) // named after broker.Name()

	err := root.Serve(context.Background())
	fmt.Println("serve:", err)
	fmt.Println("is disk full:", errors.Is(err, errDisk))
	// Output:
	// root: child "broker" escalated (broker gave up on worker): disk full? true
	// serve: supervision: supervisor "root" escalated failure of child "broker": supervision: supervisor "broker" escalated failure of child "worker": disk full
	// is disk full: true
}

// connection is a publisher behind a flapping load balancer, reduced to its
// supervision: each incarnation either connects, has a message confirmed and
// then loses its connection (progress, then failure), or has its dial refused
// (failure without progress).
type connection struct {
	progress bool   // the incarnations make progress before failing
	lastRun  int    // the incarnation that ends the example: it stops the supervisor
	runs     int    // incarnations so far; Serve calls never overlap
	stop     func() // cancels the supervisor's context
}

func (c *connection) Serve(ctx context.Context) error {
	c.runs++
	if c.runs == c.lastRun {
		c.stop()
		<-ctx.Done()
		return ctx.Err()
	}
	if !c.progress {
		return errors.New("dial: connection refused")
	}
	supervision.Progress(ctx) // connected, and the broker confirmed a message
	return errors.New("connection reset by peer")
}

// runConnection supervises c under the default decider and prints what the
// supervisor did.
func runConnection(c *connection) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.stop = cancel
	var failures, maxInWindow, progressed, escalations int
	sup := supervision.New(supervision.Spec{
		Name:        "broker",
		MaxRestarts: 5,                            // at most 5 failures without progress...
		Window:      time.Minute,                  // ...within a minute
		Backoff:     supervision.Backoff{Min: -1}, // restart at once, for the example
		EventHook: func(e supervision.Event) {
			switch e.Kind {
			case supervision.EventFailure:
				failures++
				maxInWindow = max(maxInWindow, e.Stats.Failures)
				if e.Stats.Progressed {
					progressed++
				}
			case supervision.EventEscalation:
				escalations++
			}
		},
	})
	_ = sup.Add(supervision.ChildSpec{Name: "publisher", Service: c})
	err := sup.Serve(ctx)
	fmt.Printf("failures: %d (%d after progress), most in one window: %d, escalations: %d\n",
		failures, progressed, maxInWindow, escalations)
	fmt.Println("serve:", err)
}

// A connection that works, then is cut, 50 times in a row (all within the
// minute): each incarnation made progress before it failed, so each failure
// starts a fresh count and the supervisor never gives up on it.
func ExampleProgress() {
	runConnection(&connection{progress: true, lastRun: 51})
	// Output:
	// failures: 50 (50 after progress), most in one window: 1, escalations: 0
	// serve: context canceled
}

// A dial refused at every start: no incarnation makes progress, so the
// sixth failure within the window exhausts the intensity and the supervisor
// escalates, as it always did.
func ExampleProgress_failingAtStart() {
	runConnection(&connection{progress: false, lastRun: 51})
	// Output:
	// failures: 6 (0 after progress), most in one window: 6, escalations: 1
	// serve: supervision: supervisor "broker" escalated failure of child "publisher": dial: connection refused
}
