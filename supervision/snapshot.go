package supervision

import (
	"fmt"
	"slices"
	"time"
)

// ChildState is a child's state in a [ChildInfo].
type ChildState int

const (
	// ChildStopped: no incarnation runs and none is due: before Serve,
	// after it, or a child the loop has not started yet.
	ChildStopped ChildState = iota
	// ChildRunning: an incarnation of the child runs.
	ChildRunning
	// ChildRestarting: the child failed (or a sibling's restart stopped it)
	// and a restart is scheduled: at NextRestart, or, when NextRestart is
	// zero, once its abandoned incarnation returns.
	ChildRestarting
)

func (s ChildState) String() string {
	switch s {
	case ChildStopped:
		return "stopped"
	case ChildRunning:
		return "running"
	case ChildRestarting:
		return "restarting"
	}
	return fmt.Sprintf("ChildState(%d)", int(s))
}

// ChildInfo is one child of a supervisor as a snapshot shows it: OTP's
// which_children entry with the restart statistics.
type ChildInfo struct {
	Name    string
	State   ChildState
	Restart RestartType
	// Stats are the child's restart statistics as of its latest failure
	// (they are updated at failures, not as time passes: Stats.Failures
	// counts the window that ended at Stats.LastFailure).
	Stats ChildRestartStats
	// LastError is the child's latest failure under the current (or last)
	// Serve call, nil if it has not failed. It is the error value: whoever
	// shows it decides what of its text may be shown.
	LastError error
	// NextRestart is when a ChildRestarting child is started again (zero
	// while it waits for an abandoned incarnation, and in other states).
	NextRestart time.Time
	// Process is the running incarnation's party (OTP's child pid): link
	// to it, monitor it or Kill it. Nil unless State is ChildRunning.
	Process *Process
	// Supervisor is the child's own snapshot when its Service is a
	// *Supervisor (or anything else with a Snapshot() SupervisorInfo
	// method), read when this snapshot was taken; nil otherwise.
	Supervisor *SupervisorInfo
}

// SupervisorInfo is a snapshot of a supervisor and, nested in its
// children's Supervisor fields, of its subtree.
type SupervisorInfo struct {
	Name     string
	Strategy Strategy
	Serving  bool // Serve runs
	Children []ChildInfo
}

// ChildCounts are OTP's count_children: how many children a supervisor has.
type ChildCounts struct {
	Specs       int // children, in any state
	Active      int // children running
	Supervisors int // children that are supervisors (they have a Snapshot method)
	Workers     int // the other children
}

// published is what the loop last published for snapshots: immutable once
// stored.
type published struct {
	serving  bool
	children []ChildInfo // Supervisor fields nil: filled in at snapshot time
	services []Service   // the children's Services, same order
}

// Snapshot returns the supervisor's state and its subtree's, as the loops
// last published them: each supervisor's loop publishes a fresh copy after
// every step it takes (a start, an exit, a restart, a removal), so a
// snapshot never waits for a loop that is busy stopping a child, and is
// safe from any goroutine. Sub-supervisors are read one after the other, so
// two levels may be a step apart. Before the first Serve the children are
// listed stopped, with zero statistics.
func (s *Supervisor) Snapshot() SupervisorInfo {
	info := SupervisorInfo{Name: s.spec.Name, Strategy: s.spec.Strategy}
	pub := s.snap.Load()
	if pub == nil {
		s.mu.Lock()
		specs := slices.Clone(s.specs)
		s.mu.Unlock()
		pub = &published{}
		for _, c := range specs {
			pub.children = append(pub.children, ChildInfo{Name: c.Name, Restart: c.Restart})
			pub.services = append(pub.services, c.Service)
		}
	}
	info.Serving = pub.serving
	info.Children = slices.Clone(pub.children)
	for i, svc := range pub.services {
		if sub, ok := svc.(interface{ Snapshot() SupervisorInfo }); ok {
			si := sub.Snapshot()
			info.Children[i].Supervisor = &si
		}
	}
	return info
}

// WhichChildren returns the supervisor's children (OTP's which_children),
// each with its subtree when it is a supervisor: Snapshot().Children.
func (s *Supervisor) WhichChildren() []ChildInfo { return s.Snapshot().Children }

// CountChildren counts the supervisor's children (OTP's count_children).
func (s *Supervisor) CountChildren() ChildCounts {
	var n ChildCounts
	for _, c := range s.Snapshot().Children {
		n.Specs++
		if c.State == ChildRunning {
			n.Active++
		}
		if c.Supervisor != nil {
			n.Supervisors++
		} else {
			n.Workers++
		}
	}
	return n
}

// publish stores a snapshot of the run's children for Snapshot; final marks
// the end of Serve (nothing runs, nothing is due any more).
func (r *run) publish(final bool) {
	pub := &published{serving: !final}
	for _, c := range r.children {
		ci := ChildInfo{
			Name:      c.spec.Name,
			Restart:   c.spec.Restart,
			Stats:     c.stats(),
			LastError: c.lastErr,
		}
		switch {
		case final:
		case c.cur != nil:
			ci.State, ci.Process = ChildRunning, c.cur.proc
		case c.waiting:
			ci.State = ChildRestarting
			if !c.blocked {
				ci.NextRestart = c.due
			}
		}
		pub.children = append(pub.children, ci)
		pub.services = append(pub.services, c.spec.Service)
	}
	r.s.snap.Store(pub)
}
