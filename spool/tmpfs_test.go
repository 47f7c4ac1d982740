package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/tmpfs"

	"github.com/publisher-dev/publisher/internal/poll"
)

// The spool on a real 16 MiB volume with the default options (64 MiB
// segments, MaxBytes 1 GiB): it takes records until the volume is full,
// then refuses with ErrNoSpace; nothing taken is lost; once everything is
// acknowledged it reclaims every segment and accepts again by itself, and
// the directory holds nothing left over.
func TestSmallVolume(t *testing.T) {
	noLeaks(t)
	dir := tmpfs.Mount(t, 16<<20)
	s := open(t, dir, Options{})
	t.Cleanup(func() { s.Close() }) // before the unmount
	st := s.Status()
	if !st.Accepting || st.SegmentBytes != 2<<20 {
		t.Fatalf("Status after Open: %+v, want accepting with 2 MiB segments", st)
	}
	ctx := context.Background()
	var seqs []uint64
	var err error
	for i := 0; ; i++ {
		var seq uint64
		if seq, err = s.Append(ctx, bigPayload(i)); err != nil {
			break
		}
		seqs = append(seqs, seq)
	}
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, ErrFull) {
		t.Fatalf("Append on a full volume: %v", err)
	}
	free, _ := OSFS{}.FreeBytes(dir)
	stored := int64(len(seqs)) * int64(len(bigPayload(0))+headerSize)
	t.Logf("full: %d records, %d bytes stored, %d bytes free: %v", len(seqs), stored, free, err)
	if free > 1<<20 {
		t.Fatalf("refused with %d bytes free", free)
	}
	if st := s.Status(); st.Accepting || !errors.Is(st.Err, ErrNoSpace) {
		t.Fatalf("Status when full: %+v", st)
	}
	got := drain(t, s)
	if len(got) != len(seqs) {
		t.Fatalf("drained %d records, appended %d", len(got), len(seqs))
	}
	for i, r := range got {
		if r.Seq != seqs[i] || !bytes.Equal(r.Data, bigPayload(i)) {
			t.Fatalf("record %d: seq %d, want %d", i, r.Seq, seqs[i])
		}
		s.Ack(r.Seq)
	}
	start := time.Now()
	poll.Within(t, waitLimit, "accepting again", func() bool { return s.Status().Accepting })
	t.Logf("accepting again %v after the last ack", time.Since(start))
	poll.Within(t, waitLimit, "no leftover", func() bool { return len(leftovers(t, dir)) == 0 })
	seq, err := s.Append(ctx, bigPayload(0))
	if err != nil || seq <= seqs[len(seqs)-1] {
		t.Fatalf("Append after the drain = %d, %v", seq, err)
	}
	s.Close()
	if l := leftovers(t, dir); len(l) != 0 {
		t.Fatalf("leftovers after Close: %v", l)
	}
}

func bigPayload(i int) []byte {
	return fmt.Appendf(bytes.Repeat([]byte{'p'}, 4000), "-%d", i)
}
