// Package loadtest runs concurrent load in tests: n goroutines repeat one
// attempt until told to stop, and the result says which messages were
// acknowledged to their sender, so a test can then look for each of them in the
// queue.
package loadtest

import "sync"

// Result is what a load run saw.
type Result struct {
	Acked    []string       // ids of the messages acknowledged to their sender
	Total    int            // attempts
	Outcomes map[string]int // attempts by outcome label
}

// Attempt makes one publish; it returns the message id, whether the sender got
// an acknowledgement, and a label for the outcome (an HTTP status, an error).
type Attempt func() (id string, acked bool, outcome string)

// Run calls attempt from n goroutines until stop is closed and returns when
// every goroutine has finished its last attempt.
func Run(n int, stop <-chan struct{}, attempt Attempt) *Result {
	res := &Result{Outcomes: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				id, acked, outcome := attempt()
				mu.Lock()
				res.Total++
				res.Outcomes[outcome]++
				if acked {
					res.Acked = append(res.Acked, id)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}

// Start is Run in the background: the result arrives on the channel.
func Start(n int, stop <-chan struct{}, attempt Attempt) <-chan *Result {
	c := make(chan *Result, 1)
	go func() { c <- Run(n, stop, attempt) }()
	return c
}
