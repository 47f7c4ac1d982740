package supervision

import (
	"context"
	"sync/atomic"
)

// Progress records that the incarnation whose Serve received ctx has made
// progress: it did the work it exists for (a publisher connected and the
// broker confirmed a message), so its failure, when it comes, is not the
// failure of a child that cannot start. Such a failure starts a fresh restart
// intensity count and a fresh backoff (see "Restart intensity" in the package
// doc).
//
// Progress marks the incarnation and every ancestor incarnation up the tree:
// the sub-supervisor whose Serve started it, that sub-supervisor's own
// supervisor, and so on, because a supervisor's child inherits the values of
// its Serve context. So a child's progress is also its sub-supervisor's
// progress at the parent.
//
// Call it with the ctx given to Serve (or one derived from it), from any
// goroutine, while Serve runs, as often as convenient: each call is one
// context lookup and one atomic load per level of the tree, plus a store the
// first time. For a ctx that did not come from a supervisor it does nothing.
// The supervisor reads the mark when the incarnation exits, so a call after
// Serve returned no longer counts for that incarnation (it still marks the
// ancestors that are running).
func Progress(ctx context.Context) {
	p, _ := ctx.Value(progressKey{}).(*progress)
	p.mark()
}

type progressKey struct{}

// progress is one incarnation's progress marker. The loop creates it with the
// incarnation and reads it when the incarnation exits; Progress sets it from
// any goroutine.
type progress struct {
	made   atomic.Bool
	parent *progress // the marker of the incarnation of the supervisor that started this one; nil at the root
}

// progressOf returns the marker carried by ctx, or nil.
func progressOf(ctx context.Context) *progress {
	p, _ := ctx.Value(progressKey{}).(*progress)
	return p
}

// mark sets p and all its ancestors. The load before the store keeps repeated
// calls from writing a shared cache line.
func (p *progress) mark() {
	for ; p != nil; p = p.parent {
		if !p.made.Load() {
			p.made.Store(true)
		}
	}
}

// madeProgress reports whether p was marked; nil reports false.
func (p *progress) madeProgress() bool { return p != nil && p.made.Load() }
