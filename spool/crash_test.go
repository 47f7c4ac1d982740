package spool

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashChild appends as fast as it can from several goroutines and prints
// every seq whose Append returned nil, until it is killed.
func crashChild(dir string) {
	s, err := Open(dir, Options{SegmentBytes: 256 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := os.Stdout
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				data := []byte(fmt.Sprintf("w%d-%d-%s", w, i, strings.Repeat("p", 200)))
				seq, err := s.Append(context.Background(), data)
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(out, "%d %s\n", seq, data[:strings.IndexByte(string(data), '-')+8])
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// crashSeed replays TestCrashSIGKILL's kill times: go test ./spool -run
// '^TestCrashSIGKILL$' -crash-seed N (0: from the clock).
var crashSeed = flag.Int64("crash-seed", 0, "seed of TestCrashSIGKILL's kill times (0: from the clock)")

func TestCrashSIGKILL(t *testing.T) {
	noLeaks(t)
	if testing.Short() {
		t.Skip("crash test")
	}
	dir := t.TempDir()
	seed := *crashSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay: go test ./spool -run '^TestCrashSIGKILL$' -crash-seed %d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	var lastMax uint64
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SPOOL_CRASH_CHILD="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		printed := map[uint64]bool{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) != 2 {
					continue // a line cut by the kill
				}
				seq, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					printed[seq] = true
				}
			}
		}()
		time.Sleep(time.Duration(150+rng.Intn(600)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		cmd.Wait()
		if len(printed) == 0 {
			t.Fatalf("round %d: child acknowledged nothing", round)
		}

		s, err := Open(dir, Options{SegmentBytes: 256 << 10})
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		got := map[uint64]bool{}
		var prev uint64
		for _, r := range drain(t, s) {
			if r.Seq <= prev {
				t.Fatalf("round %d: out of order", round)
			}
			prev = r.Seq
			if !strings.HasPrefix(string(r.Data), "w") {
				t.Fatalf("round %d: bad record %d", round, r.Seq)
			}
			got[r.Seq] = true
		}
		var maxSeq uint64
		for seq := range printed {
			if !got[seq] {
				t.Fatalf("round %d: acknowledged seq %d lost (%d printed, %d recovered)", round, seq, len(printed), len(got))
			}
			if seq <= lastMax {
				t.Fatalf("round %d: seq %d reused (previous round reached %d)", round, seq, lastMax)
			}
			maxSeq = max(maxSeq, seq)
		}
		t.Logf("round %d: %d acknowledged, %d recovered", round, len(printed), len(got))
		lastMax = maxSeq
		// Acknowledge everything, so the next round starts from little.
		for seq := range got {
			s.Ack(seq)
		}
		s.Close()
	}
}
