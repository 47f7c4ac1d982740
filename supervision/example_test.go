package supervision_test

import (
	"context"
	"errors"
	"fmt"

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
