package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method; 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// mean returns the arithmetic mean of lat; 0 for an empty slice. In a closed
// loop of C workers it is what the rate follows: rate = C / mean.
func mean(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	return sum / time.Duration(len(lat))
}

// latencySummary sorts lat in place and returns its p50 and p99.
func latencySummary(lat []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(lat)
	return percentile(lat, 50), percentile(lat, 99)
}
