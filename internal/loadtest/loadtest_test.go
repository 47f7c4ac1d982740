package loadtest

import (
	"fmt"
	"sync/atomic"
	"testing"
)

func TestRunCountsEveryAttempt(t *testing.T) {
	stop := make(chan struct{})
	var n atomic.Int64
	res := <-Start(4, stop, func() (string, bool, string) {
		i := n.Add(1)
		if i == 100 {
			close(stop)
		}
		return fmt.Sprint(i), i%2 == 0, map[bool]string{true: "200", false: "503"}[i%2 == 0]
	})
	if int64(res.Total) != n.Load() {
		t.Fatalf("Total %d, attempts %d", res.Total, n.Load())
	}
	if len(res.Acked) != res.Outcomes["200"] || res.Outcomes["200"]+res.Outcomes["503"] != res.Total {
		t.Fatalf("inconsistent result: %+v", res)
	}
}
