package supervision_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/publisher-dev/publisher/supervision"
)

// The five runs of "Programming Erlang"'s edemo1 start(Bool, M), as the
// seed translates them to Scala: A always traps exits; B links to A and
// traps exits when Bool says so; C links to B and then dies with a reason,
// divides by zero, or exits normally. Where the original sleeps a second
// before it prints the states, these wait for the cascade to settle
// (Process.Idle), so the output is exact.

// What C does once linked to B (the seed's M).
type (
	die    struct{ reason error } // exit(Reason); a nil reason is a normal exit
	divide struct{ n int }        // 1/N, then wait
)

// wait is edemo1's wait(Prog): it prints every signal the process receives
// until its context ends.
func wait(ctx context.Context, name string) error {
	self := supervision.Self(ctx)
	for {
		s, err := self.Receive(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("%s received %v\n", name, s)
	}
}

func start(trapB bool, m any) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := supervision.Spawn(ctx, "a", supervision.ServiceFunc(func(ctx context.Context) error {
		supervision.Self(ctx).TrapExits(true)
		return wait(ctx, "a")
	}))
	_ = a.Idle(ctx) // A traps exits and waits
	b := supervision.Spawn(ctx, "b", supervision.ServiceFunc(func(ctx context.Context) error {
		self := supervision.Self(ctx)
		self.TrapExits(trapB)
		if err := self.Link(a); err != nil {
			return err
		}
		return wait(ctx, "b")
	}))
	_ = b.Idle(ctx) // B is linked to A and waits
	c := supervision.Spawn(ctx, "c", supervision.ServiceFunc(func(ctx context.Context) error {
		if err := supervision.Self(ctx).Link(b); err != nil {
			return err
		}
		switch m := m.(type) {
		case die:
			return m.reason
		case divide:
			fmt.Println("1/N =", 1/m.n)
		}
		return wait(ctx, "c")
	}))

	<-c.Done()      // C exited and told B
	_ = b.Idle(ctx) // B printed what it received, or exited and told A
	_ = a.Idle(ctx) // A printed what it received
	status("b", b)
	status("c", c)

	b.Unlink(a) // so that stopping them tells neither of the other
	cancel()
	<-a.Done()
	<-b.Done()
}

func status(name string, p *supervision.Process) {
	if st := p.State(); st != supervision.ProcessExited {
		fmt.Printf("%s is %v\n", name, st)
		return
	}
	reason := "normal"
	if err := p.Reason(); err != nil {
		reason = err.Error()
	}
	fmt.Printf("%s is exited (%s)\n", name, reason)
}

// start(false, Die('abc)): C exits with reason abc; B, linked to C and not
// trapping exits, is ended with the same reason; A, linked to B and
// trapping exits, receives B's exit as a message.
func ExampleProcess_Link_die() {
	start(false, die{errors.New("abc")})
	// Output:
	// a received Exit(b, abc)
	// b is exited (abc)
	// c is exited (abc)
}

// start(false, Die('normal)): a normal exit is not propagated: B, linked to
// C, lives on.
func ExampleProcess_Link_normal() {
	start(false, die{nil})
	// Output:
	// b is waiting
	// c is exited (normal)
}

// start(false, Divide(0)): C's division by zero is a panic, recovered as
// its exit reason; it ends B, and A receives B's exit with that reason.
func ExampleProcess_Link_divide() {
	start(false, divide{0})
	// Output:
	// a received Exit(b, supervision: panic: runtime error: integer divide by zero)
	// b is exited (supervision: panic: runtime error: integer divide by zero)
	// c is exited (supervision: panic: runtime error: integer divide by zero)
}

// start(true, Die('abc)): B traps exits, so C's exit reaches it as a
// message and B stays alive; A hears nothing.
func ExampleProcess_TrapExits_die() {
	start(true, die{errors.New("abc")})
	// Output:
	// b received Exit(c, abc)
	// b is waiting
	// c is exited (abc)
}

// start(true, Divide(0)): an uncaught failure is not propagated past a
// party that traps exits.
func ExampleProcess_TrapExits_divide() {
	start(true, divide{0})
	// Output:
	// b received Exit(c, supervision: panic: runtime error: integer divide by zero)
	// b is waiting
	// c is exited (supervision: panic: runtime error: integer divide by zero)
}

// A monitor is one-way and never ends the monitoring party: it receives one
// Down with the reason. Monitoring (or linking to) a party that has already
// exited delivers the notice at once.
func ExampleProcess_Monitor() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	worker := supervision.Spawn(ctx, "worker", supervision.ServiceFunc(func(ctx context.Context) error {
		<-ctx.Done()
		return errors.New("disk full")
	}))
	watcher := supervision.Spawn(ctx, "watcher", supervision.ServiceFunc(func(ctx context.Context) error {
		return wait(ctx, "watcher")
	}))
	_ = watcher.Idle(ctx)
	if _, err := watcher.Monitor(worker); err != nil {
		fmt.Println(err)
	}
	worker.Kill(errors.New("stop")) // the worker does not trap exits: it ends
	<-worker.Done()
	_ = watcher.Idle(ctx)
	fmt.Println("worker:", worker.Reason())

	// Too late to watch it end, not too late to hear of it.
	if _, err := watcher.Monitor(worker); err != nil {
		fmt.Println(err)
	}
	_ = watcher.Idle(ctx)
	fmt.Println("watcher is", watcher.State())
	cancel()
	<-watcher.Done()
	// Output:
	// watcher received Down(worker, stop)
	// worker: stop
	// watcher received Down(worker, stop)
	// watcher is waiting
}

// A simple worker (the seed's SimpleWorker): it answers 1/N, and a
// division by zero crashes it.
type divideRequest struct {
	n     int
	reply chan int
}

type simpleWorker struct{}

func (simpleWorker) Receive(_ context.Context, req divideRequest) error {
	req.reply <- 1 / req.n
	return nil
}

func newSimpleWorker() *supervision.Actor[divideRequest] {
	return supervision.NewActor(8, func() supervision.Receiver[divideRequest] { return simpleWorker{} })
}

// ask sends 1/n to w and returns the answer.
func ask(w *supervision.Actor[divideRequest], n int) int {
	reply := make(chan int, 1)
	_ = w.Send(divideRequest{n, reply})
	return <-reply
}

// printEvents prints a supervisor's events in the seed's words.
func printEvents(e supervision.Event) {
	switch e.Kind {
	case supervision.EventStart:
		fmt.Printf("Starting worker %s\n", e.Child)
	case supervision.EventFailure:
		fmt.Printf("Worker [%s] has failed due to [%v]\n", e.Child, e.Err)
	case supervision.EventRestart:
		fmt.Printf("Restarting worker [%s]...\n", e.Child)
	}
}

// The seed's first supervisor scenario: a supervisor is a party trapping
// its children's exits; a worker that crashes on a division by zero is
// restarted, and the request sent after the crash is answered by the new
// incarnation, through the same reference.
func ExampleSupervisor_restartedWorker() {
	worker := newSimpleWorker()
	sup := supervision.New(supervision.Spec{
		Name:      "basic_supervisor",
		Backoff:   supervision.Backoff{Min: -1},
		EventHook: printEvents,
	})
	_ = sup.Add(supervision.ChildSpec{Name: "simple_worker", Service: worker})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- sup.Serve(ctx) }()

	_ = worker.Send(divideRequest{0, make(chan int, 1)}) // never answered: it crashes the worker
	fmt.Println("Divide(1) =", ask(worker, 1))
	cancel()
	<-errc
	// Output:
	// Starting worker simple_worker
	// Worker [simple_worker] has failed due to [supervision: panic: runtime error: integer divide by zero]
	// Restarting worker [simple_worker]...
	// Starting worker simple_worker
	// Divide(1) = 1
}

// The seed's second supervisor scenario: the low-level supervisor is ended
// by an exit signal ("Kill lowlevel", sent to its process as the snapshot
// names it); the high-level supervisor restarts it, and with it its worker,
// which answers again.
func ExampleSupervisor_restartLowLevel() {
	worker := newSimpleWorker()
	lowLevel := supervision.New(supervision.Spec{Name: "lowlevel_supervisor", Backoff: supervision.Backoff{Min: -1}, EventHook: printEvents})
	_ = lowLevel.Add(supervision.ChildSpec{Name: "simple_worker", Service: worker})
	highLevel := supervision.New(supervision.Spec{Name: "highlevel_supervisor", Backoff: supervision.Backoff{Min: -1}, EventHook: printEvents})
	_ = highLevel.Add(supervision.ChildSpec{Service: lowLevel}) // named lowlevel_supervisor
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- highLevel.Serve(ctx) }()

	fmt.Println("Divide(1) =", ask(worker, 1))
	low := highLevel.WhichChildren()[0]
	oldWorker := low.Supervisor.Children[0].Process
	fmt.Println("Terminating lowlevel_supervisor with reason [Kill lowlevel]")
	low.Process.Kill(errors.New("Kill lowlevel"))
	<-oldWorker.Done() // the old incarnation is gone: the next request goes to the new one
	fmt.Println("Divide(1) =", ask(worker, 1))
	cancel()
	<-errc
	// Output:
	// Starting worker lowlevel_supervisor
	// Starting worker simple_worker
	// Divide(1) = 1
	// Terminating lowlevel_supervisor with reason [Kill lowlevel]
	// Worker [lowlevel_supervisor] has failed due to [Kill lowlevel]
	// Restarting worker [lowlevel_supervisor]...
	// Starting worker lowlevel_supervisor
	// Starting worker simple_worker
	// Divide(1) = 1
}
