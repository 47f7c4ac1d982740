package supervision

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// waitSnapshot polls sup's snapshot until cond holds (the loop publishes
// right after the event the test waits for), failing after safety.
func waitSnapshot(t *testing.T, sup *Supervisor, what string, cond func(SupervisorInfo) bool) SupervisorInfo {
	t.Helper()
	deadline := time.Now().Add(safety)
	for {
		info := sup.Snapshot()
		if cond(info) {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot never showed %s; last: %+v", what, info)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSnapshotStates(t *testing.T) {
	defer goleak.VerifyNone(t)
	clock := NewFakeClock(t0)
	rec := newRecorder()
	root := New(Spec{Name: "root", Clock: clock, EventHook: rec.hook, Backoff: Backoff{Min: time.Second, RandomFactor: -1}})
	sub := New(Spec{Name: "sub", Strategy: RestForOne, Clock: clock})
	a, b, c := newCtl("a", nil), newCtl("b", nil), newCtl("c", nil)
	a.add(t, root, ChildSpec{})
	b.add(t, root, ChildSpec{Restart: Transient})
	c.add(t, sub, ChildSpec{})
	if err := root.Add(ChildSpec{Service: sub}); err != nil {
		t.Fatal(err)
	}

	before := root.Snapshot()
	if before.Serving || before.Name != "root" || len(before.Children) != 3 {
		t.Fatalf("before Serve: %+v", before)
	}
	for _, ci := range before.Children {
		if ci.State != ChildStopped || ci.Process != nil {
			t.Fatalf("before Serve: %+v", ci)
		}
	}
	if sub := before.Children[2].Supervisor; sub == nil || sub.Name != "sub" || sub.Strategy != RestForOne || len(sub.Children) != 1 {
		t.Fatalf("before Serve, the nested supervisor: %+v", before.Children[2])
	}

	s := serve(root)
	a.waitStart(t, 1)
	b.waitStart(t, 1)
	c.waitStart(t, 1)
	running := waitSnapshot(t, root, "everything running", func(i SupervisorInfo) bool {
		return i.Serving && i.Children[0].State == ChildRunning && i.Children[1].State == ChildRunning &&
			i.Children[2].State == ChildRunning && i.Children[2].Supervisor.Children[0].State == ChildRunning
	})
	if b := running.Children[1]; b.Restart != Transient || b.Process == nil || b.Process.Name() != "b" || b.LastError != nil || !b.NextRestart.IsZero() {
		t.Fatalf("running child: %+v", b)
	}
	if n := root.CountChildren(); n != (ChildCounts{Specs: 3, Active: 3, Supervisors: 1, Workers: 2}) {
		t.Fatalf("CountChildren = %+v", n)
	}

	a.fail(t, errBoom)
	rec.waitFor(t, EventRestart, "a")
	restarting := waitSnapshot(t, root, "a restarting", func(i SupervisorInfo) bool { return i.Children[0].State == ChildRestarting })
	ai := restarting.Children[0]
	if !errors.Is(ai.LastError, errBoom) || !ai.NextRestart.Equal(t0.Add(time.Second)) || ai.Process != nil ||
		ai.Stats.Failures != 1 || ai.Stats.TotalRestarts != 1 || !ai.Stats.LastFailure.Equal(t0) {
		t.Fatalf("restarting child: %+v", ai)
	}
	if n := root.CountChildren(); n.Active != 2 || n.Specs != 3 {
		t.Fatalf("CountChildren while a restarts = %+v", n)
	}

	clock.BlockUntil(1)
	clock.Advance(time.Second)
	a.waitStart(t, 2)
	again := waitSnapshot(t, root, "a running again", func(i SupervisorInfo) bool { return i.Children[0].State == ChildRunning })
	if ai := again.Children[0]; !errors.Is(ai.LastError, errBoom) || ai.Stats.TotalRestarts != 1 || !ai.NextRestart.IsZero() {
		t.Fatalf("restarted child keeps its last failure and statistics: %+v", ai)
	}

	b.fail(t, nil) // a transient child that finishes is removed
	waitSnapshot(t, root, "b removed", func(i SupervisorInfo) bool { return len(i.Children) == 2 })

	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
	after := root.Snapshot()
	if after.Serving || len(after.Children) != 2 {
		t.Fatalf("after Serve: %+v", after)
	}
	for _, ci := range append(after.Children, after.Children[1].Supervisor.Children...) {
		if ci.State != ChildStopped || ci.Process != nil {
			t.Fatalf("after Serve: %+v", ci)
		}
	}
	if ai := after.Children[0]; !errors.Is(ai.LastError, errBoom) || ai.Stats.TotalRestarts != 1 {
		t.Fatalf("after Serve, a's history: %+v", ai)
	}
}

// Snapshots taken from several goroutines while children of a nested
// supervisor restart as fast as they can: every snapshot is consistent
// (a Process exactly when running, a restart time only when restarting,
// restart counts that never go back), and the last one agrees with the
// events. Run with -race.
func TestSnapshotUnderConcurrentRestarts(t *testing.T) {
	defer goleak.VerifyNone(t)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	const workers, target = 4, 300 // restarts per worker
	var restarts [workers]atomic.Int64
	names := []string{"w0", "w1", "w2", "w3"}
	sub := New(Spec{Name: "sub", MaxRestarts: 1 << 30, Backoff: Backoff{Min: -1, RandomFactor: -1}, EventHook: func(e Event) {
		if e.Kind == EventRestart {
			for i, n := range names {
				if n == e.Child {
					restarts[i].Add(1)
				}
			}
		}
	}})
	for i := range workers {
		work := time.Duration(rng.IntN(200)) * time.Microsecond
		_ = sub.Add(ChildSpec{Name: names[i], Service: ServiceFunc(func(ctx context.Context) error {
			select {
			case <-time.After(work):
				return errBoom
			case <-ctx.Done():
				return ctx.Err()
			}
		})})
	}
	root := New(Spec{Name: "root"})
	_ = root.Add(ChildSpec{Service: sub})
	s := serve(root)

	stop := make(chan struct{})
	var readers sync.WaitGroup
	var snapshots atomic.Int64
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			last := map[string]int{}
			for {
				select {
				case <-stop:
					return
				default:
				}
				time.Sleep(20 * time.Microsecond) // pace: leave the two cores to the restarts
				info := root.Snapshot()
				snapshots.Add(1)
				if len(info.Children) != 1 || info.Children[0].Supervisor == nil {
					t.Errorf("root snapshot: %+v", info)
					return
				}
				for _, ci := range info.Children[0].Supervisor.Children {
					if (ci.Process != nil) != (ci.State == ChildRunning) || (!ci.NextRestart.IsZero() && ci.State != ChildRestarting) {
						t.Errorf("inconsistent child: %+v", ci)
						return
					}
					if ci.Stats.TotalRestarts < last[ci.Name] {
						t.Errorf("%s: restarts went back from %d to %d", ci.Name, last[ci.Name], ci.Stats.TotalRestarts)
						return
					}
					last[ci.Name] = ci.Stats.TotalRestarts
					if ci.Stats.TotalRestarts > 0 && !errors.Is(ci.LastError, errBoom) {
						t.Errorf("%s: restarted without a last error: %+v", ci.Name, ci)
						return
					}
				}
			}
		}()
	}
	deadline := time.Now().Add(safety)
	for i := range workers {
		for restarts[i].Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("worker %d restarted %d times in %v", i, restarts[i].Load(), safety)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
	close(stop)
	readers.Wait()
	final := root.Snapshot().Children[0].Supervisor
	for i, ci := range final.Children {
		if got := int64(ci.Stats.TotalRestarts); got != restarts[i].Load() || ci.State != ChildStopped {
			t.Errorf("%s: final snapshot %d restarts (%v), events %d", ci.Name, got, ci.State, restarts[i].Load())
		}
	}
	t.Logf("%d snapshots during %d restarts", snapshots.Load(), workers*target)
}
