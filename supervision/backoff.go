package supervision

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff configures the delay before a restart. The zero value means the
// documented defaults; a negative Min, Max or RandomFactor means zero (so
// Backoff{Min: -1} restarts without delay).
type Backoff struct {
	Min          time.Duration // default 100ms
	Max          time.Duration // default 10s
	Multiplier   float64       // default 2; values below 1 are treated as 1
	RandomFactor float64       // default 0.2, at most 1; delay scaled by a uniform factor in [1-RandomFactor, 1+RandomFactor) (see Delay), then capped at Max
	// ResetAfter: an incarnation that ran at least this long resets the
	// attempt counter, so a child that was healthy for a while restarts
	// after Min again. Default (zero): the supervisor's Spec.Window;
	// negative: never reset.
	ResetAfter time.Duration
	// Rand returns a uniform value in [0, 1) used for jitter; nil means
	// math/rand/v2.Float64. Tests inject a constant to make delays exact.
	Rand func() float64
}

func (b Backoff) normalized() Backoff {
	if b.Min == 0 {
		b.Min = 100 * time.Millisecond
	} else if b.Min < 0 {
		b.Min = 0
	}
	if b.Max == 0 {
		b.Max = 10 * time.Second
	} else if b.Max < 0 {
		b.Max = 0
	}
	if b.Multiplier == 0 {
		b.Multiplier = 2
	} else if b.Multiplier < 1 {
		b.Multiplier = 1
	}
	if b.RandomFactor == 0 {
		b.RandomFactor = 0.2
	} else if b.RandomFactor < 0 {
		b.RandomFactor = 0
	} else if b.RandomFactor > 1 {
		b.RandomFactor = 1
	}
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
	return b
}

// Delay returns the delay before restart attempt n (n = 0 is the first
// restart after a healthy run), with defaults applied:
//
//	base  = min(Max, Min * Multiplier^n)
//	delay = min(Max, base * (1 - RandomFactor + 2*RandomFactor*r))
//
// where r = Rand() is uniform in [0, 1), so the jitter factor is uniform in
// [1-RandomFactor, 1+RandomFactor). Jitter spreads the restarts of many
// children that failed together (e.g. all publishers of a dead broker); the
// final cap keeps Max a hard upper bound.
func (b Backoff) Delay(n int) time.Duration { return b.normalized().delay(n) }

// delay is Delay for a normalized Backoff.
func (b Backoff) delay(n int) time.Duration {
	if n < 0 {
		n = 0
	}
	maxf := float64(b.Max)
	base := float64(b.Min) * math.Pow(b.Multiplier, float64(n))
	if base > maxf || math.IsInf(base, 0) || math.IsNaN(base) {
		base = maxf
	}
	d := base * (1 - b.RandomFactor + 2*b.RandomFactor*b.Rand())
	if d > maxf {
		d = maxf
	}
	if d < 0 {
		d = 0
	}
	return time.Duration(d)
}
