package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// searchResult is one setting of the search for mode (c′)'s setting: its
// msgs/s in each round and their median.
type searchResult struct {
	Setting    string    `json:"setting"`
	RoundRates []float64 `json:"round_msgs_per_sec"`
	Median     float64   `json:"median_msgs_per_sec"`
	Errors     int64     `json:"errors"`
}

// searchBest measures each setting of cfg.bestSearch with the pipelined
// client (cfg.bestSearchRounds interleaved rounds, a 1 s warm-up and
// cfg.bestSearchDuration each, the queue purged after each) and sets b.best
// to the one with the highest median rate. With no settings to search, b.best
// is cfg.best.
func (b *bench) searchBest(ctx context.Context) ([]searchResult, error) {
	b.best = b.cfg.best
	if len(b.cfg.bestSearch) == 0 {
		return nil, nil
	}
	res := make([]searchResult, len(b.cfg.bestSearch))
	for round := 1; round <= b.cfg.bestSearchRounds; round++ {
		for i, set := range b.cfg.bestSearch {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			w := newWindow(time.Second, b.cfg.bestSearchDuration)
			m, err := b.runPipelinedWith(ctx, w, set)
			if err != nil {
				return nil, err
			}
			rate := float64(m.measured) / b.cfg.bestSearchDuration.Seconds()
			logf("search for (c′), round %d of %d: %s %.0f msgs/s, %d errors, load average %.2f", round, b.cfg.bestSearchRounds, set, rate, m.errs, loadAvg1())
			res[i].Setting = set.String()
			res[i].RoundRates = append(res[i].RoundRates, rate)
			res[i].Errors += m.errs
			if err := b.purge(); err != nil {
				return nil, err
			}
		}
	}
	best := -1
	for i := range res {
		res[i].Median = median(res[i].RoundRates)
		if res[i].Errors == 0 && (best < 0 || res[i].Median > res[best].Median) {
			best = i
		}
	}
	if best < 0 {
		return res, fmt.Errorf("search for (c′): every setting had errors")
	}
	b.best = b.cfg.bestSearch[best]
	logf("search for (c′): %s is the fastest (median %.0f msgs/s)", b.best, res[best].Median)
	return res, nil
}

// median is the median of v (the mean of the two middle values for an even
// count); 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
