package spool

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures durable appends of 256-byte records with 64
// parallel writers (b.SetParallelism scales GOMAXPROCS).
func BenchmarkAppend(b *testing.B) {
	noLeaks(b)
	var fsyncs, fsyncNanos atomic.Int64
	s := open(b, b.TempDir(), Options{MaxBytes: 64 << 30, OnFsync: func(d time.Duration) {
		fsyncs.Add(1)
		fsyncNanos.Add(int64(d))
	}})
	defer s.Close()
	data := make([]byte, 256)
	procs := max(1, 64/testingGOMAXPROCS())
	b.SetParallelism(procs)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Append(context.Background(), data); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	if n := fsyncs.Load(); n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "appends/fsync")
		b.ReportMetric(float64(fsyncNanos.Load())/float64(n)/1e3, "µs/fsync")
	}
}

func testingGOMAXPROCS() int { return runtime.GOMAXPROCS(0) }
