package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/publisher-dev/publisher/internal/poll"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("SPOOL_CRASH_CHILD"); dir != "" {
		crashChild(dir)
		return
	}
	goleak.VerifyTestMain(m)
}

// noLeaks makes the test fail if a goroutine it started (a spool's writer,
// cleaner, spare maker, watermarker, or one of the test's own) outlives it.
// The check runs after the cleanups registered later (a spool's Close), so
// call it first.
func noLeaks(t testing.TB) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func open(t testing.TB, dir string, opts Options) *Spool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func payload(i int) []byte {
	return []byte(fmt.Sprintf("message-%06d-%s", i, bytes.Repeat([]byte{'x'}, i%50)))
}

// drain reads every record available now (until Next blocks briefly).
func drain(t testing.TB, s *Spool) []Record {
	t.Helper()
	var out []Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		r, err := s.Next(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, r)
	}
}

func segFiles(t testing.TB, dir, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

func TestRoundTripAndRestart(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	opts := Options{SegmentBytes: 1024}
	s := open(t, dir, opts)
	ctx := context.Background()
	var seqs []uint64
	for i := range 100 {
		seq, err := s.Append(ctx, payload(i))
		if err != nil {
			t.Fatal(err)
		}
		if len(seqs) > 0 && seq != seqs[len(seqs)-1]+1 {
			t.Fatalf("seq %d after %d", seq, seqs[len(seqs)-1])
		}
		seqs = append(seqs, seq)
	}
	before := len(segFiles(t, dir, "*.seg"))
	if n, b := s.Stats(); n != 100 || b <= 100*headerSize {
		t.Fatalf("Stats = %d, %d", n, b)
	}
	recs := drain(t, s)
	if len(recs) != 100 {
		t.Fatalf("got %d records", len(recs))
	}
	for i, r := range recs {
		if r.Seq != seqs[i] || !bytes.Equal(r.Data, payload(i)) {
			t.Fatalf("record %d = %d %q", i, r.Seq, r.Data)
		}
	}
	// Rewind redelivers unacked ones; ack the first 60 out of order.
	perm := rand.New(rand.NewSource(1)).Perm(60)
	for _, i := range perm {
		s.Ack(seqs[i])
	}
	s.Ack(seqs[0]) // repeated: ignored
	s.Ack(12345)   // unknown: ignored
	s.Rewind()
	recs = drain(t, s)
	if len(recs) != 40 || recs[0].Seq != seqs[60] {
		t.Fatalf("after rewind got %d records, first %v", len(recs), recs[0].Seq)
	}
	if n, _ := s.Stats(); n != 40 {
		t.Fatalf("Stats = %d", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	s = open(t, dir, opts)
	defer s.Close()
	after := len(segFiles(t, dir, "*.seg"))
	if after >= before {
		t.Fatalf("segments: %d before restart, %d after: acked segments not deleted", before, after)
	}
	recs = drain(t, s)
	if len(recs) < 40 {
		t.Fatalf("after restart got %d records", len(recs))
	}
	// Acked whole segments are gone; what comes is in order and ends with
	// the 40 unacked records.
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq <= recs[i-1].Seq {
			t.Fatal("out of order")
		}
	}
	tail := recs[len(recs)-40:]
	for i, r := range tail {
		if r.Seq != seqs[60+i] || !bytes.Equal(r.Data, payload(60+i)) {
			t.Fatalf("redelivered %d = %d", i, r.Seq)
		}
	}
	seq, err := s.Append(ctx, []byte("after restart"))
	if err != nil || seq != seqs[99]+1 {
		t.Fatalf("Append after restart = %d, %v", seq, err)
	}
}

func TestSequenceSurvivesFullAck(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 256})
	var last uint64
	for i := range 50 {
		last, _ = s.Append(context.Background(), payload(i))
	}
	for seq := uint64(1); seq <= last; seq++ {
		s.Ack(seq)
	}
	s.Close()
	s = open(t, dir, Options{SegmentBytes: 256})
	defer s.Close()
	if n, _ := s.Stats(); n > 10 {
		t.Fatalf("%d records redelivered", n)
	}
	seq, err := s.Append(context.Background(), nil)
	if err != nil || seq <= last {
		t.Fatalf("seq after restart %d (last %d), %v", seq, last, err)
	}
	r, err := s.Next(context.Background())
	for err == nil && r.Seq != seq {
		r, err = s.Next(context.Background())
	}
	if err != nil || len(r.Data) != 0 {
		t.Fatalf("empty record: %v %v", r, err)
	}
}

func TestGroupCommit(t *testing.T) {
	noLeaks(t)
	var fsyncs atomic.Int64
	s := open(t, t.TempDir(), Options{OnFsync: func(time.Duration) { fsyncs.Add(1) }})
	defer s.Close()
	const writers, each = 64, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := s.Append(context.Background(), payload(w*each+i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	n := fsyncs.Load()
	t.Logf("%d appends, %d fsyncs", writers*each, n)
	if n > writers*each/4 {
		t.Fatalf("%d fsyncs for %d appends: no group commit", n, writers*each)
	}
	if m, _ := s.Stats(); m != writers*each {
		t.Fatalf("Stats = %d", m)
	}
}

func TestFull(t *testing.T) {
	noLeaks(t)
	rec := int64(headerSize + 100)
	s := open(t, t.TempDir(), Options{MaxBytes: 10 * rec, SegmentBytes: 3 * rec})
	defer s.Close()
	data := make([]byte, 100)
	var seqs []uint64
	for range 10 {
		seq, err := s.Append(context.Background(), data)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	start := time.Now()
	if _, err := s.Append(context.Background(), data); !errors.Is(err, ErrFull) {
		t.Fatalf("Append = %v, want ErrFull", err)
	}
	if _, err := s.Append(context.Background(), nil); !errors.Is(err, ErrFull) {
		t.Fatalf("Append = %v, want ErrFull", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("ErrFull took %v", d)
	}
	s.Ack(seqs[3])
	if _, err := s.Append(context.Background(), data); err != nil {
		t.Fatalf("after ack: %v", err)
	}
	if _, err := s.Append(context.Background(), data); !errors.Is(err, ErrFull) {
		t.Fatalf("Append = %v, want ErrFull", err)
	}
}

func TestDeadLetter(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	s := open(t, dir, Options{})
	defer s.Close()
	seq, _ := s.Append(context.Background(), []byte("poison"))
	if err := s.DeadLetter(seq, []byte("poison"), "rejected by broker"); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Stats(); n != 0 {
		t.Fatalf("Stats = %d after DeadLetter", n)
	}
	b, err := os.ReadFile(filepath.Join(dir, deadLetterName))
	if err != nil || !bytes.Contains(b, []byte(`"reason":"rejected by broker"`)) || !bytes.Contains(b, []byte(`"data":"cG9pc29u"`)) {
		t.Fatalf("dead-letter.log: %s %v", b, err)
	}
}

// A Next whose ctx has ended takes no record, even one that is there: the
// cursor stays, and the next consumer gets the record.
func TestNextWithEndedContextTakesNothing(t *testing.T) {
	noLeaks(t)
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	seq, err := s.Append(context.Background(), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r, err := s.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next(cancelled) = record %d, %v; want context.Canceled", r.Seq, err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := s.Next(ctx); err != nil || r.Seq != seq {
		t.Fatalf("Next = record %d, %v; want record %d", r.Seq, err, seq)
	}
}

func TestNextBlocksAndCloses(t *testing.T) {
	noLeaks(t)
	s := open(t, t.TempDir(), Options{})
	got := make(chan Record)
	go func() {
		r, err := s.Next(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	time.Sleep(20 * time.Millisecond)
	seq, _ := s.Append(context.Background(), []byte("a"))
	if r := <-got; r.Seq != seq {
		t.Fatalf("Next = %d", r.Seq)
	}
	errc := make(chan error)
	go func() { _, err := s.Next(context.Background()); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// writeRecords fills a spool in dir and returns the seqs and the payloads.
func writeRecords(t *testing.T, dir string, opts Options, n int) map[uint64][]byte {
	s := open(t, dir, opts)
	m := map[uint64][]byte{}
	for i := range n {
		seq, err := s.Append(context.Background(), payload(i))
		if err != nil {
			t.Fatal(err)
		}
		m[seq] = payload(i)
	}
	s.Close()
	return m
}

func TestTornTail(t *testing.T) {
	noLeaks(t)
	rng := rand.New(rand.NewSource(42))
	opts := Options{SegmentBytes: 4096}
	for iter := range 60 {
		dir := t.TempDir()
		want := writeRecords(t, dir, opts, 20+rng.Intn(200))
		segs := segFiles(t, dir, "*.seg")
		lastSeg := segs[len(segs)-1]
		// Record end offsets in the last segment.
		data, _ := os.ReadFile(lastSeg)
		first, _ := parseSegName(filepath.Base(lastSeg))
		recs, end := scanRecords(data, 0, first-1)
		cut := rng.Int63n(end + 1)
		var damage []byte
		switch iter % 3 {
		case 1:
			damage = make([]byte, rng.Intn(500))
		case 2:
			damage = make([]byte, 1+rng.Intn(500))
			rng.Read(damage)
		}
		if err := os.Truncate(lastSeg, cut); err != nil {
			t.Fatal(err)
		}
		f, _ := os.OpenFile(lastSeg, os.O_WRONLY|os.O_APPEND, 0)
		f.Write(damage)
		f.Close()
		// Records entirely before cut must survive; later ones are gone
		// (unless the damage happened to rewrite the very same bytes).
		damaged, _ := os.ReadFile(lastSeg)
		for _, r := range recs {
			end := r.off + int64(r.size)
			if end > cut && (end > int64(len(damaged)) || !bytes.Equal(damaged[r.off:end], data[r.off:end])) {
				delete(want, r.seq)
			}
		}
		var corrupt atomic.Int64
		o := opts
		o.OnCorrupt = func(string, error) { corrupt.Add(1) }
		s := open(t, dir, o)
		got := drain(t, s)
		if len(got) != len(want) {
			var gs []uint64
			for _, r := range got {
				if _, ok := want[r.Seq]; !ok {
					gs = append(gs, r.Seq)
				}
			}
			t.Fatalf("iter %d: recovered %d records, want %d; extra %v; last seg %s cut %d end %d recs %d damage %d", iter, len(got), len(want), gs, lastSeg, cut, end, len(recs), len(damage))
		}
		for _, r := range got {
			if w, ok := want[r.Seq]; !ok || !bytes.Equal(w, r.Data) {
				t.Fatalf("iter %d: invented record %d", iter, r.Seq)
			}
		}
		if corrupt.Load() != 0 {
			t.Fatalf("iter %d: torn tail reported as corruption", iter)
		}
		seq, err := s.Append(context.Background(), []byte("after"))
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		// And once more: the appended record and everything else survive.
		s = open(t, dir, o)
		got2 := drain(t, s)
		s.Close()
		if len(got2) != len(want)+1 || got2[len(got2)-1].Seq != seq {
			t.Fatalf("iter %d: after reopen %d records", iter, len(got2))
		}
		if corrupt.Load() != 0 {
			t.Fatalf("iter %d: corruption after repair", iter)
		}
	}
}

func TestFlippedByte(t *testing.T) {
	noLeaks(t)
	for _, target := range []string{"middle", "last"} {
		t.Run(target, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentBytes: 2048}
			want := writeRecords(t, dir, opts, 300)
			segs := segFiles(t, dir, "*.seg")
			if len(segs) < 4 {
				t.Fatalf("%d segments", len(segs))
			}
			victim := segs[len(segs)/2]
			if target == "last" {
				victim = segs[len(segs)-1]
			}
			data, _ := os.ReadFile(victim)
			first, _ := parseSegName(filepath.Base(victim))
			recs, _ := scanRecords(data, 0, first-1)
			if len(recs) < 3 {
				t.Fatalf("victim has %d records", len(recs))
			}
			hit := recs[1]
			data[hit.off+headerSize+2] ^= 0x40
			os.WriteFile(victim, data, 0o644)
			wantID := string(want[hit.seq][8:14])
			delete(want, hit.seq)

			var corrupt []string
			var lost []string
			o := opts
			o.OnCorrupt = func(seg string, err error) { corrupt = append(corrupt, seg) }
			o.OnLost = func(seg string, n int, ids []string) { lost = append(lost, fmt.Sprint(seg, n, ids)) }
			o.Describe = describePayload
			s := open(t, dir, o)
			defer func() { s.Close() }()
			if len(corrupt) != 1 || corrupt[0] != victim {
				t.Fatalf("OnCorrupt calls: %v", corrupt)
			}
			if want := fmt.Sprint(victim, 1, []string{wantID}); len(lost) != 1 || lost[0] != want {
				t.Fatalf("OnLost calls: %q, want %q", lost, want)
			}
			if m := segFiles(t, dir, "*.corrupt"); len(m) != 1 {
				t.Fatalf("corrupt files: %v", m)
			}
			got := drain(t, s)
			if len(got) != len(want) {
				t.Fatalf("recovered %d records, want %d (all but the damaged one)", len(got), len(want))
			}
			for _, r := range got {
				if !bytes.Equal(want[r.Seq], r.Data) {
					t.Fatalf("record %d wrong", r.Seq)
				}
			}
			if _, err := s.Append(context.Background(), []byte("x")); err != nil {
				t.Fatal(err)
			}
			s.Close()
			corrupt, lost = nil, nil
			s = open(t, dir, o)
			if len(corrupt) != 0 || len(lost) != 0 {
				t.Fatalf("corruption reported again: %v %v", corrupt, lost)
			}
			if got := drain(t, s); len(got) != len(want)+1 {
				t.Fatalf("after reopen %d records", len(got))
			}
		})
	}
}

// describePayload names a payload(i) by its number, also when other bytes
// of it are damaged.
func describePayload(data []byte) string {
	if len(data) < 14 {
		return ""
	}
	return string(data[8:14])
}

// A corrupt segment of which nothing can be salvaged: an older one is set
// aside and leaves no segment behind; the newest one (here unreadable) is set
// aside and its name kept by an empty segment, so the sequence carries on
// past that name (how many records it held cannot be read). The records of
// the other segments are all recovered.
func TestCorruptSegmentNothingSalvaged(t *testing.T) {
	noLeaks(t)
	for _, target := range []string{"older", "newest"} {
		t.Run(target, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentBytes: 2048}
			want := writeRecords(t, dir, opts, 100)
			var maxSeq uint64
			for seq := range want {
				maxSeq = max(maxSeq, seq)
			}
			segs := segFiles(t, dir, "*.seg")
			if len(segs) < 3 {
				t.Fatalf("%d segments", len(segs))
			}
			victim := segs[len(segs)/2]
			if target == "newest" {
				victim = segs[len(segs)-1]
			}
			data, err := os.ReadFile(victim)
			if err != nil {
				t.Fatal(err)
			}
			first, _ := parseSegName(filepath.Base(victim))
			recs, _ := scanRecords(data, 0, first-1)
			for _, r := range recs {
				delete(want, r.seq)
			}
			o := opts
			if target == "older" {
				// Nothing in it reads as a record, and it is not zeros.
				if err := os.WriteFile(victim, bytes.Repeat([]byte{0xff}, len(data)), 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				o.FS = unreadableFS{name: victim}
			}
			var corrupt []string
			o.OnCorrupt = func(seg string, err error) { corrupt = append(corrupt, seg) }
			s := open(t, dir, o)
			defer s.Close()
			if len(corrupt) != 1 || corrupt[0] != victim {
				t.Fatalf("OnCorrupt calls: %v, want one for %s", corrupt, victim)
			}
			if m := segFiles(t, dir, "*.corrupt"); len(m) != 1 {
				t.Fatalf("corrupt files: %v", m)
			}
			if target == "older" {
				if _, err := os.Stat(victim); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("%s after recovery: %v, want no segment left", victim, err)
				}
			}
			got := drain(t, s)
			if len(got) != len(want) {
				t.Fatalf("recovered %d records, want %d (all but the %d of %s)", len(got), len(want), len(recs), filepath.Base(victim))
			}
			for _, r := range got {
				if !bytes.Equal(want[r.Seq], r.Data) {
					t.Fatalf("record %d wrong", r.Seq)
				}
			}
			above := maxSeq
			if target == "newest" {
				above = first
			}
			seq, err := s.Append(context.Background(), []byte("x"))
			if err != nil || seq <= above {
				t.Fatalf("Append = %d, %v; want a sequence number above %d", seq, err, above)
			}
		})
	}
}

// unreadableFS fails opening the file name for reading only (with EIO) and,
// with noWatermark, every attempt to save the ack watermark.
type unreadableFS struct {
	OSFS
	name        string
	noWatermark bool
}

func (f unreadableFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if name == f.name && flag == os.O_RDONLY || f.noWatermark && filepath.Base(name) == watermarkName+".tmp" {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EIO}
	}
	return f.OSFS.OpenFile(name, flag, perm)
}

// Lost records are counted and named: damaged CRCs (framing intact, so
// named), a damaged length (counted from the gap in the sequence), a
// damaged tail of an older segment, and a Describe that panics.
func TestLostRecords(t *testing.T) {
	noLeaks(t)
	type damage func(data []byte, recs []recLoc) (lost int, ids []string)
	flip := func(data []byte, r recLoc) string {
		data[r.off+headerSize+15] ^= 0x01
		return describePayload(data[r.off+headerSize : r.off+int64(r.size)])
	}
	cases := []struct {
		name  string
		panic bool
		hurt  damage
	}{
		{"two crcs", false, func(data []byte, recs []recLoc) (int, []string) {
			return 2, []string{flip(data, recs[1]), flip(data, recs[3])}
		}},
		{"three in a row", false, func(data []byte, recs []recLoc) (int, []string) {
			return 3, []string{flip(data, recs[1]), flip(data, recs[2]), flip(data, recs[3])}
		}},
		{"length", false, func(data []byte, recs []recLoc) (int, []string) {
			binary.LittleEndian.PutUint32(data[recs[1].off:], 1<<30)
			return 1, nil
		}},
		{"first record", false, func(data []byte, recs []recLoc) (int, []string) {
			binary.LittleEndian.PutUint32(data[recs[0].off:], 3)
			return 1, nil
		}},
		{"tail", false, func(data []byte, recs []recLoc) (int, []string) {
			return 1, []string{flip(data, recs[len(recs)-1])}
		}},
		{"describe panics", true, func(data []byte, recs []recLoc) (int, []string) {
			flip(data, recs[2])
			return 1, nil
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentBytes: 2048}
			want := writeRecords(t, dir, opts, 100)
			segs := segFiles(t, dir, "*.seg")
			victim := segs[len(segs)/2]
			data, _ := os.ReadFile(victim)
			first, _ := parseSegName(filepath.Base(victim))
			recs, _ := scanRecords(data, 0, first-1)
			if len(recs) < 5 {
				t.Fatalf("victim has %d records", len(recs))
			}
			wantN, wantIDs := c.hurt(data, recs)
			os.WriteFile(victim, data, 0o644)
			type call struct {
				n   int
				ids []string
			}
			var calls []call
			var logs logBuf
			o := opts
			o.Logger = logs.logger()
			o.OnLost = func(seg string, n int, ids []string) {
				if seg != victim {
					t.Errorf("OnLost for %s, want %s", seg, victim)
				}
				calls = append(calls, call{n, ids})
			}
			o.Describe = describePayload
			if c.panic {
				o.Describe = func([]byte) string { panic("no") }
			}
			s := open(t, dir, o)
			defer s.Close()
			if len(calls) != 1 || calls[0].n != wantN || fmt.Sprint(calls[0].ids) != fmt.Sprint(wantIDs) {
				t.Fatalf("OnLost calls %v, want %d %v", calls, wantN, wantIDs)
			}
			line := logs.lines("spool: corrupt segment set aside")
			if len(line) != 1 || !strings.Contains(line[0], fmt.Sprintf(`"lost_records":%d`, wantN)) {
				t.Fatalf("log: %q", line)
			}
			if got := drain(t, s); len(got) != len(want)-wantN {
				t.Fatalf("%d records left, want %d", len(got), len(want)-wantN)
			}
		})
	}
}

// A record that no longer reads back intact in Next is a lost record too.
func TestLostOnRead(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	writeRecords(t, dir, Options{SegmentBytes: 4096}, 3)
	var lost []string
	s := open(t, dir, Options{SegmentBytes: 4096, Describe: describePayload, OnLost: func(seg string, n int, ids []string) {
		lost = append(lost, fmt.Sprint(filepath.Base(seg), n, ids))
	}})
	defer s.Close()
	seg := segFiles(t, dir, "*.seg")[0]
	data, _ := os.ReadFile(seg)
	recs, _ := scanRecords(data, 0, 0)
	f, _ := os.OpenFile(seg, os.O_WRONLY, 0)
	f.WriteAt([]byte{data[recs[1].off+headerSize+15] ^ 1}, recs[1].off+headerSize+15)
	f.Close()
	got := drain(t, s)
	if len(got) != 2 || got[1].Seq != recs[2].seq {
		t.Fatalf("records %v", got)
	}
	if want := fmt.Sprint(filepath.Base(seg), 1, []string{"000001"}); len(lost) != 1 || lost[0] != want {
		t.Fatalf("OnLost calls %q, want %q", lost, want)
	}
}

// faultFS injects failures into writes and fsyncs of segment files, and can
// fake the free space: a fixed answer, or a small volume (quota) holding
// the files of one directory.
type faultFS struct {
	OSFS
	failWrite, failSync, enospc atomic.Bool
	free                        atomic.Int64 // FreeBytes answer if > 0 (0 while enospc)
	quota                       int64        // if > 0: a volume of this size holding quotaDir
	quotaDir                    string
	lie                         int64        // added to the quota volume's FreeBytes answer
	segOps                      atomic.Int64 // operations on *.seg and *.next files
	mu                          sync.Mutex
	failed                      map[*faultFile]bool // descriptors that saw a failure
	usedAfterFail               atomic.Bool
}

func newFaultFS() *faultFS { return &faultFS{failed: map[*faultFile]bool{}} }

type faultFile struct {
	File
	fs   *faultFS
	name string
}

func (f *faultFS) countOp(name string) {
	if strings.HasSuffix(name, segSuffix) || strings.HasSuffix(name, markerSuffix) {
		f.segOps.Add(1)
	}
}

func (f *faultFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f.countOp(name)
	// An empty marker needs no data block: it can be made on a full volume.
	if f.enospc.Load() && flag&os.O_CREATE != 0 && !strings.HasSuffix(name, markerSuffix) {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f, name: name}, nil
}

func (f *faultFS) Rename(o, n string) error {
	f.countOp(n)
	return f.OSFS.Rename(o, n)
}

func (f *faultFS) Remove(name string) error {
	f.countOp(name)
	return f.OSFS.Remove(name)
}

func (f *faultFS) FreeBytes(dir string) (int64, error) {
	if f.enospc.Load() {
		return 0, nil
	}
	if n := f.free.Load(); n > 0 {
		return n, nil
	}
	if f.quota > 0 {
		f.mu.Lock()
		defer f.mu.Unlock()
		return max(0, f.quota-f.usedLocked()) + f.lie, nil
	}
	return f.OSFS.FreeBytes(dir)
}

// usedLocked returns the bytes of the files in the quota directory.
func (f *faultFS) usedLocked() int64 {
	entries, _ := os.ReadDir(f.quotaDir)
	var n int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

func (f *faultFile) check() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.failed[f] {
		f.fs.usedAfterFail.Store(true)
	}
	return nil
}

func (f *faultFile) markFailed() {
	f.fs.mu.Lock()
	f.fs.failed[f] = true
	f.fs.mu.Unlock()
}

func (f *faultFile) WriteAt(b []byte, off int64) (int, error) {
	f.check()
	f.fs.countOp(f.name)
	if f.fs.enospc.Load() {
		f.markFailed()
		n := len(b) / 2
		f.File.WriteAt(b[:n], off) // a partial write
		return n, &os.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
	}
	if f.fs.failWrite.Load() {
		f.markFailed()
		return 0, &os.PathError{Op: "write", Path: f.name, Err: syscall.EIO}
	}
	if f.fs.quota > 0 {
		f.fs.mu.Lock()
		defer f.fs.mu.Unlock()
		fi, err := f.File.Stat()
		if err != nil {
			return 0, err
		}
		grow := off + int64(len(b)) - fi.Size()
		if room := f.fs.quota - f.fs.usedLocked(); grow > room {
			n := max(0, int(int64(len(b))-grow+room))
			f.File.WriteAt(b[:n], off)
			return n, &os.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
		}
	}
	return f.File.WriteAt(b, off)
}

func (f *faultFile) Allocate(size int64) error {
	if f.fs.enospc.Load() {
		return &os.PathError{Op: "fallocate", Path: f.name, Err: syscall.ENOSPC}
	}
	if f.fs.quota > 0 {
		fi, err := f.File.Stat()
		if err != nil {
			return err
		}
		return writeZeros(f, fi.Size(), size)
	}
	return f.File.Allocate(size)
}

func (f *faultFile) Datasync() error {
	f.check()
	f.fs.countOp(f.name)
	if f.fs.failSync.Load() {
		f.markFailed()
		return &os.PathError{Op: "fdatasync", Path: f.name, Err: syscall.EIO}
	}
	return f.File.Datasync()
}

func (f *faultFile) Sync() error {
	f.check()
	f.fs.countOp(f.name)
	if f.fs.failSync.Load() {
		f.markFailed()
		return &os.PathError{Op: "fsync", Path: f.name, Err: syscall.EIO}
	}
	return f.File.Sync()
}

// waitLimit bounds the waits for the spool's background goroutines, which
// act within a second or two.
const waitLimit = 10 * time.Second

func TestDiskFailure(t *testing.T) {
	noLeaks(t)
	for _, mode := range []string{"write", "fsync", "enospc"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			ffs := newFaultFS()
			opts := Options{FS: ffs, SegmentBytes: 8192}
			// A full volume is ErrNoSpace (ErrFull), not ErrDisk.
			want := ErrDisk
			if mode == "enospc" {
				want = ErrNoSpace
			}
			s := open(t, dir, opts)
			ctx := context.Background()
			acked := map[uint64][]byte{}
			var mu sync.Mutex
			appendN := func(n int, fault bool) (okN, failN int) {
				var wg sync.WaitGroup
				for w := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range n {
							p := payload(w*1000 + i)
							seq, err := s.Append(ctx, p)
							mu.Lock()
							if err == nil {
								acked[seq] = p
								okN++
							} else {
								if !errors.Is(err, want) {
									t.Errorf("Append error %v does not match %v", err, want)
								}
								failN++
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				return
			}
			if ok, fail := appendN(20, false); fail != 0 || ok != 160 {
				t.Fatalf("healthy: %d ok, %d failed", ok, fail)
			}
			switch mode {
			case "write":
				ffs.failWrite.Store(true)
			case "fsync":
				ffs.failSync.Store(true)
			case "enospc":
				ffs.enospc.Store(true)
			}
			if _, fail := appendN(5, true); fail == 0 {
				t.Fatal("no append failed while the disk failed")
			}
			_, err := s.Append(ctx, []byte("x"))
			if !errors.Is(err, want) {
				t.Fatalf("Append during fault: %v", err)
			}
			if st := s.Status(); st.Accepting || !errors.Is(st.Err, want) {
				t.Fatalf("Status during fault: %+v", st)
			}
			ffs.failWrite.Store(false)
			ffs.failSync.Store(false)
			ffs.enospc.Store(false)
			// The spool retries by itself, in the background.
			poll.Within(t, waitLimit, "accepting again", func() bool { return s.Status().Accepting })
			if ok, fail := appendN(20, false); fail != 0 || ok != 160 {
				t.Fatalf("after recovery: %d ok, %d failed", ok, fail)
			}
			if ffs.usedAfterFail.Load() {
				t.Fatal("a file descriptor was used after a failed write or fsync")
			}
			if n, _ := s.Stats(); n != len(acked) {
				t.Fatalf("Stats = %d, acked %d", n, len(acked))
			}
			s.Close()
			s = open(t, dir, Options{SegmentBytes: 8192})
			defer s.Close()
			got := map[uint64][]byte{}
			for _, r := range drain(t, s) {
				got[r.Seq] = r.Data
			}
			for seq, p := range acked {
				if !bytes.Equal(got[seq], p) {
					t.Fatalf("acknowledged record %d lost", seq)
				}
			}
		})
	}
}

// Acknowledgements mostly survive a restart: records acked before Close are
// not delivered again after Open (the ack watermark), the others are.
func TestAckWatermarkSurvivesRestart(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var seqs []uint64
	for i := range 10 {
		seq, err := s.Append(ctx, []byte{byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	for _, seq := range seqs[:6] {
		s.Ack(seq)
	}
	s.Ack(seqs[8]) // out of order: beyond the watermark, delivered again
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, _ := s.Stats(); n != 4 {
		t.Fatalf("%d live records after restart, want 4 (seqs 7..10)", n)
	}
	for _, want := range []uint64{seqs[6], seqs[7], seqs[8], seqs[9]} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rec, err := s.Next(cctx)
		cancel()
		if err != nil || rec.Seq != want {
			t.Fatalf("Next = %d, %v; want %d", rec.Seq, err, want)
		}
	}
}

// The newest segment is lost at Open (unreadable) after the watermark had
// covered some of its records, and the process then dies before it saves a
// watermark of its own (here: it cannot write one). A record accepted in
// between must survive the next Open: it must not take a sequence number at
// or below the old watermark, which would mark it acknowledged.
func TestWatermarkCoversNoRecordAcceptedAfterALoss(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	opts := Options{SegmentBytes: 2048}
	s := open(t, dir, opts)
	ctx := context.Background()
	var w uint64
	for i := range 100 {
		seq, err := s.Append(ctx, payload(i))
		if err != nil {
			t.Fatal(err)
		}
		if i < 95 {
			s.Ack(seq)
			w = seq
		}
	}
	s.Close() // saves the watermark
	segs := segFiles(t, dir, "*.seg")
	if first, _ := parseSegName(filepath.Base(segs[len(segs)-1])); first > w {
		t.Fatalf("the newest segment begins at %d, above the watermark %d", first, w)
	}
	o := opts
	o.FS = unreadableFS{name: segs[len(segs)-1], noWatermark: true}
	s = open(t, dir, o)
	seq, err := s.Append(ctx, []byte("accepted after the loss"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // as if killed: no watermark was saved since Open
	if seq <= w {
		t.Errorf("Append after the loss = sequence %d, at or below the watermark %d", seq, w)
	}
	s = open(t, dir, opts)
	defer s.Close()
	got := drain(t, s)
	if len(got) != 1 || got[0].Seq != seq || string(got[0].Data) != "accepted after the loss" {
		t.Fatalf("after the next Open: %d records %v, want the one accepted after the loss (%d)", len(got), got, seq)
	}
}

// AppendBatch appends in order, shares fsyncs, and refuses only the records
// that do not fit, not the ones after them.
func TestAppendBatch(t *testing.T) {
	noLeaks(t)
	var fsyncs atomic.Int64
	s := open(t, t.TempDir(), Options{MaxBytes: 64 << 10, OnFsync: func(time.Duration) { fsyncs.Add(1) }})
	defer s.Close()
	var data [][]byte
	for i := range 100 {
		data = append(data, payload(i))
	}
	data[50] = make([]byte, 128<<10) // over the bound alone
	before := fsyncs.Load()
	seqs, errs := s.AppendBatch(context.Background(), data)
	for i, err := range errs {
		if i == 50 {
			if !errors.Is(err, ErrFull) {
				t.Fatalf("record 50: %v, want ErrFull", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if i > 0 && i != 51 && seqs[i] != seqs[i-1]+1 {
			t.Fatalf("record %d has seq %d after %d", i, seqs[i], seqs[i-1])
		}
	}
	if n := fsyncs.Load() - before; n > 5 {
		t.Errorf("99 records took %d fsyncs, want them to share a few", n)
	}
	recs := drain(t, s)
	if len(recs) != 99 {
		t.Fatalf("%d records read back, want 99", len(recs))
	}
	for j, i := 0, 0; i < 100; i++ {
		if i == 50 {
			continue
		}
		if !bytes.Equal(recs[j].Data, data[i]) {
			t.Fatalf("record %d read back as %q", i, recs[j].Data)
		}
		j++
	}
}
