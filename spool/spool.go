// Package spool is a durable on-disk queue (a segment log) that holds
// messages between being accepted and being confirmed by the broker.
//
// # Files
//
// A spool directory holds segment files named after the sequence number of
// their first record ("%020d.seg"), "dead-letter.log", segments set aside
// as corrupt ("*.corrupt"), and transient "spare.tmp" / "*.salvage" files.
// Segments are preallocated to Options.SegmentBytes (a zero-filled spare is
// prepared in the background, so that fdatasync only ever overwrites
// allocated, written blocks and does not have to change file metadata).
// Creating, renaming or deleting a segment is followed by an fsync of the
// directory. The record format is described at headerSize.
//
// # Durability
//
// Append returns nil only after the record was written and the segment
// fdatasync'ed: such a record survives a crash of the process or of the
// machine. Group commit: a single writer goroutine takes every append waiting
// at that moment, writes them with one write and makes them durable with one
// fdatasync (two if the batch crosses into a new segment), then releases all
// of them. Sequence numbers are assigned by the writer, increase strictly,
// and continue after a restart (a sequence number is never reused; numbers
// of a batch that failed are skipped).
//
// Acknowledgements (Ack) are not durable: after a restart every record of a
// segment that still exists is delivered again, so delivery is
// at-least-once. A segment file is deleted once all its records are
// acknowledged and it is no longer written to (the newest segment is always
// kept, it carries the sequence number on).
//
// # Recovery
//
// Open scans the segments in order. Valid data of a segment ends at the
// first invalid record (see headerSize); what follows must be zeros. In the
// newest segment anything else is a torn write and is zeroed
// (truncated). Anything else after the end of valid data of an older
// segment, or valid records found after damaged bytes in any segment, means
// the segment is corrupt: it is renamed to "*.corrupt" (OnCorrupt is called,
// and it is logged), and every valid record that could be read from it is
// copied into a new segment of the same name first, so nothing that can be
// read is lost. Corrupt data never makes Open fail.
package spool

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"
)

var (
	// ErrFull is returned by Append when the record would make the live
	// (unacknowledged) bytes exceed Options.MaxBytes; nothing is written.
	ErrFull = errors.New("spool: full")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("spool: closed")
	// ErrDisk wraps the operating system's error of a failed write, fsync,
	// or file creation. The records of that batch are not durable.
	ErrDisk = errors.New("spool: disk failure")
	// ErrTooLarge is returned by Append for a record over 4 GiB.
	ErrTooLarge = errors.New("spool: record too large")
)

// Options configures a Spool. Zero values take the defaults.
type Options struct {
	// MaxBytes bounds the bytes of live (unacknowledged, plus being
	// appended) records, framing included. Default 1 GiB.
	MaxBytes int64
	// SegmentBytes is the preallocated size of a segment file. A record
	// larger than that gets a segment of its own size. Default 64 MiB.
	SegmentBytes int64
	// Logger receives recovery and failure reports. Default: discarded.
	Logger *slog.Logger
	// OnFsync is called after every successful data fsync of the writer,
	// from the writer goroutine, with its duration.
	OnFsync func(d time.Duration)
	// OnCorrupt is called (from Open, or from Next for a record that no
	// longer reads back intact) for every segment set aside as corrupt.
	OnCorrupt func(segment string, err error)
	// FS is the file system; default OSFS (tests inject faults here).
	FS FS
}

// Record is one spooled message.
type Record struct {
	Seq  uint64
	Data []byte
}

const (
	segSuffix      = ".seg"
	corruptSuffix  = ".corrupt"
	salvageSuffix  = ".salvage"
	spareName      = "spare.tmp"
	deadLetterName = "dead-letter.log"
	maxBatchBytes  = 8 << 20
)

type segment struct {
	first uint64
	path  string

	// Guarded by Spool.mu.
	recs   []recLoc
	acked  []bool
	live   int
	rf     File // read handle, opened lazily
	active bool // being written to: never deleted

	// Writer goroutine only.
	wf  File
	off int64
	cap int64
}

type appendReq struct {
	rec  []byte // framed record; header filled in by the writer
	seq  uint64
	done chan error
}

// Spool is a durable queue of records. Append, Next, Rewind, Ack,
// DeadLetter, Stats and Close may be called concurrently; Next and Rewind
// are meant for one consumer.
type Spool struct {
	dir  string
	opts Options
	fs   FS
	log  *slog.Logger

	reqs       chan *appendReq
	stop       chan struct{} // closed by Close
	writerDone chan struct{}
	needSpare  chan struct{}
	kickClean  chan struct{}
	wg         sync.WaitGroup

	// Writer goroutine only.
	w       *segment
	nextSeq uint64
	buf     []byte

	spareMu sync.Mutex
	spare   File // zero-filled spareName, ready to become a segment
	spareSz int64

	dlMu sync.Mutex
	dl   File

	mu        sync.Mutex
	closed    bool
	segs      []*segment // by first seq
	cursor    uint64     // Next returns the first unacked record with seq >= cursor
	avail     chan struct{}
	live      int
	liveBytes int64
	reserved  int64 // liveBytes + bytes of appends in progress
}

// Open opens (creating it if needed) the spool in dir and recovers its
// contents; see the package documentation for the recovery rules.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 30
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
	}
	if opts.SegmentBytes < headerSize {
		opts.SegmentBytes = headerSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.FS == nil {
		opts.FS = OSFS{}
	}
	s := &Spool{
		dir:        dir,
		opts:       opts,
		fs:         opts.FS,
		log:        opts.Logger.With("component", "spool", "dir", dir),
		reqs:       make(chan *appendReq, 4096),
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
		needSpare:  make(chan struct{}, 1),
		kickClean:  make(chan struct{}, 1),
		avail:      make(chan struct{}),
	}
	if err := s.fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDisk, err)
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.applyWatermark()
	s.reserved = s.liveBytes
	s.wg.Add(4)
	go s.writer()
	go s.spareLoop()
	go s.cleaner()
	go s.watermarker()
	s.needSpare <- struct{}{}
	s.kickClean <- struct{}{}
	return s, nil
}

func (s *Spool) segPath(first uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", first, segSuffix))
}

// Append makes data durable as a new record and returns its sequence
// number. It returns nil only once the record is written and fdatasync'ed
// (shared with concurrent appends, see the package documentation). It
// fails at once with ErrFull when the record would exceed Options.MaxBytes,
// with an error matching ErrDisk when the write or fsync of its batch
// failed, and with ErrClosed after Close. data is copied; the caller may
// reuse it. If ctx ends first, Append returns ctx.Err(), but the record may
// still become durable and be delivered (at-least-once).
func (s *Spool) Append(ctx context.Context, data []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	size := int64(headerSize) + int64(len(data))
	if size > maxRecordSize {
		return 0, ErrTooLarge
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	if s.reserved+size > s.opts.MaxBytes {
		s.mu.Unlock()
		return 0, ErrFull
	}
	s.reserved += size
	s.mu.Unlock()

	r := &appendReq{rec: make([]byte, size), done: make(chan error, 1)}
	copy(r.rec[headerSize:], data)
	select {
	case s.reqs <- r:
	case <-s.writerDone:
		s.release(size)
		return 0, ErrClosed
	case <-ctx.Done():
		s.release(size)
		return 0, ctx.Err()
	}
	select {
	case err := <-r.done:
		return r.seq, err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.writerDone:
		select {
		case err := <-r.done:
			return r.seq, err
		default:
			return 0, ErrClosed
		}
	}
}

func (s *Spool) release(n int64) {
	s.mu.Lock()
	s.reserved -= n
	s.mu.Unlock()
}

// writer is the group-commit goroutine.
func (s *Spool) writer() {
	defer s.wg.Done()
	defer close(s.writerDone)
	var batch []*appendReq
	for {
		batch = batch[:0]
		stopping := false
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
		case <-s.stop:
			stopping = true
		}
		n := 0
		for _, r := range batch {
			n += len(r.rec)
		}
		// Take everything waiting. Appenders released by the previous
		// commit may still be on their way back: yield (a few
		// microseconds, against an fsync of hundreds) while that keeps
		// bringing more, so that they share this fsync.
		for round := 0; n < maxBatchBytes; round++ {
			got := 0
		drain:
			for n < maxBatchBytes {
				select {
				case r := <-s.reqs:
					batch = append(batch, r)
					n += len(r.rec)
					got++
				default:
					break drain
				}
			}
			if len(batch) == 0 || round >= 8 || (got == 0 && round > 0) {
				break
			}
			runtime.Gosched()
		}
		if len(batch) > 0 {
			s.commit(batch)
		}
		if stopping && len(batch) == 0 {
			if s.w != nil {
				s.w.wf.Close()
				s.w.wf = nil
			}
			return
		}
	}
}

// commit writes the batch: as many records as fit into the active segment
// with one write and one fdatasync, then rolls to a new segment for the rest.
func (s *Spool) commit(batch []*appendReq) {
	for i := 0; i < len(batch); {
		if s.w == nil {
			if err := s.newSegment(int64(len(batch[i].rec))); err != nil {
				s.fail(batch[i:], err)
				return
			}
		}
		seg := s.w
		start := i
		buf := s.buf[:0]
		for ; i < len(batch); i++ {
			rec := batch[i].rec
			if seg.off+int64(len(buf))+int64(len(rec)) > seg.cap {
				break
			}
			batch[i].seq = s.nextSeq + uint64(i-start)
			sealRecord(rec, batch[i].seq)
			buf = append(buf, rec...)
		}
		s.buf = buf[:0]
		if i == start { // the next record does not fit: roll
			s.roll()
			continue
		}
		s.nextSeq += uint64(i - start) // burnt if the write fails
		t0 := time.Now()
		_, err := seg.wf.WriteAt(buf, seg.off)
		if err == nil {
			err = seg.wf.Datasync()
		}
		if err != nil {
			s.failSegment(seg, int64(len(buf)), err)
			s.fail(batch[start:], err)
			return
		}
		if s.opts.OnFsync != nil {
			s.opts.OnFsync(time.Since(t0))
		}
		s.mu.Lock()
		off := seg.off
		for _, r := range batch[start:i] {
			seg.recs = append(seg.recs, recLoc{seq: r.seq, off: off, size: uint32(len(r.rec))})
			seg.acked = append(seg.acked, false)
			off += int64(len(r.rec))
		}
		seg.live += i - start
		s.live += i - start
		s.liveBytes += int64(len(buf))
		close(s.avail)
		s.avail = make(chan struct{})
		s.mu.Unlock()
		seg.off = off
		for _, r := range batch[start:i] {
			r.done <- nil
		}
	}
}

func (s *Spool) fail(reqs []*appendReq, err error) {
	err = fmt.Errorf("%w: %w", ErrDisk, err)
	var n int64
	for _, r := range reqs {
		n += int64(len(r.rec))
	}
	s.release(n)
	for _, r := range reqs {
		r.seq = 0
		r.done <- err
	}
}

// failSegment retires the active segment after a failed write or fsync. The
// file descriptor is closed and never used again (after a failed fsync the
// kernel may have dropped the dirty pages, and a later fsync could succeed
// without them). The bytes of the failed batch are zeroed through a new
// descriptor if possible, so that recovery sees a clean end.
func (s *Spool) failSegment(seg *segment, n int64, err error) {
	s.log.Error("spool write failed; retiring segment", "segment", seg.path, "err", err)
	seg.wf.Close()
	seg.wf = nil
	if f, oerr := s.fs.OpenFile(seg.path, os.O_RDWR, 0); oerr == nil {
		if zerr := writeZeros(f, seg.off, seg.off+n); zerr == nil {
			zerr = f.Datasync()
			if zerr != nil {
				s.log.Warn("spool: could not clear failed batch", "segment", seg.path, "err", zerr)
			}
		}
		f.Close()
	}
	s.w = nil
	s.mu.Lock()
	seg.active = false
	s.mu.Unlock()
	s.kick(s.kickClean)
}

// roll closes the (fully durable) active segment.
func (s *Spool) roll() {
	seg := s.w
	seg.wf.Close()
	seg.wf = nil
	s.w = nil
	s.mu.Lock()
	seg.active = false
	s.mu.Unlock()
	s.kick(s.kickClean)
}

// newSegment creates the active segment, named s.nextSeq, from the spare if
// one is ready, else by writing a new zero-filled file (a write into
// written blocks needs no metadata change at fdatasync; fallocate's
// unwritten extents measured about 1.7x slower per fdatasync here).
func (s *Spool) newSegment(need int64) error {
	capacity := max(s.opts.SegmentBytes, need)
	path := s.segPath(s.nextSeq)
	s.spareMu.Lock()
	f, sz := s.spare, s.spareSz
	if f != nil && sz >= capacity {
		s.spare = nil
	} else {
		f = nil
	}
	s.spareMu.Unlock()
	defer s.kick(s.needSpare) // only after the spare was renamed
	var err error
	if f != nil {
		if err = s.fs.Rename(filepath.Join(s.dir, spareName), path); err != nil {
			f.Close()
			s.fs.Remove(filepath.Join(s.dir, spareName))
			return err
		}
		capacity = sz
	} else {
		f, err = s.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if err = writeZeros(f, 0, capacity); err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			s.fs.Remove(path)
			return err
		}
	}
	if err = s.fs.SyncDir(s.dir); err != nil {
		f.Close()
		s.fs.Remove(path)
		return err
	}
	seg := &segment{first: s.nextSeq, path: path, wf: f, cap: capacity, active: true}
	s.mu.Lock()
	s.segs = append(s.segs, seg)
	s.mu.Unlock()
	s.w = seg
	return nil
}

func (s *Spool) kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// spareLoop keeps one zero-filled, fsynced spare segment file ready.
func (s *Spool) spareLoop() {
	defer s.wg.Done()
	path := filepath.Join(s.dir, spareName)
	for {
		select {
		case <-s.stop:
			s.spareMu.Lock()
			if s.spare != nil {
				s.spare.Close()
				s.spare = nil
				s.fs.Remove(path)
			}
			s.spareMu.Unlock()
			return
		case <-s.needSpare:
		}
		s.spareMu.Lock()
		have := s.spare != nil
		s.spareMu.Unlock()
		if have {
			continue
		}
		size := s.opts.SegmentBytes
		f, err := s.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			s.log.Warn("spool: cannot create spare segment", "err", err)
			continue
		}
		const chunk = 1 << 20
		zeros := make([]byte, min(chunk, size))
		for off := int64(0); off < size && err == nil; off += chunk {
			select {
			case <-s.stop:
				err = ErrClosed
				continue
			default:
			}
			_, err = f.WriteAt(zeros[:min(chunk, size-off)], off)
		}
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			s.fs.Remove(path)
			if err != ErrClosed {
				s.log.Warn("spool: cannot prepare spare segment", "err", err)
			}
			continue
		}
		s.spareMu.Lock()
		s.spare, s.spareSz = f, size
		s.spareMu.Unlock()
	}
}

// cleaner deletes segments whose records are all acknowledged.
func (s *Spool) cleaner() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kickClean:
		}
		var dead []*segment
		s.mu.Lock()
		keep := s.segs[:0]
		for i, seg := range s.segs {
			if seg.live == 0 && !seg.active && i != len(s.segs)-1 {
				dead = append(dead, seg)
				if seg.rf != nil {
					seg.rf.Close()
					seg.rf = nil
				}
				continue
			}
			keep = append(keep, seg)
		}
		clear(s.segs[len(keep):])
		s.segs = keep
		s.mu.Unlock()
		if len(dead) == 0 {
			continue
		}
		for _, seg := range dead {
			if err := s.fs.Remove(seg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("spool: cannot delete segment", "segment", seg.path, "err", err)
			}
		}
		if err := s.fs.SyncDir(s.dir); err != nil {
			s.log.Warn("spool: directory fsync failed", "err", err)
		}
	}
}

// find returns the segment and index of the record seq, under s.mu.
func (s *Spool) find(seq uint64) (*segment, int) {
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].first > seq }) - 1
	if i < 0 {
		return nil, -1
	}
	seg := s.segs[i]
	j := sort.Search(len(seg.recs), func(j int) bool { return seg.recs[j].seq >= seq })
	if j == len(seg.recs) || seg.recs[j].seq != seq {
		return nil, -1
	}
	return seg, j
}

// Next returns the next record for the consumer, in sequence order: after
// Open (or Rewind) the oldest unacknowledged record, then each following
// unacknowledged one. It blocks until a record is durable or ctx ends, and
// returns ErrClosed after Close. Only one consumer may call Next.
func (s *Spool) Next(ctx context.Context) (Record, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return Record{}, ErrClosed
		}
		seg, loc, ok := s.nextLocked()
		if ok {
			rec, err := s.readLocked(seg, loc)
			if err == nil {
				s.cursor = loc.seq + 1
				s.mu.Unlock()
				return rec, nil
			}
			if !errors.Is(err, errRecordCorrupt) {
				s.mu.Unlock()
				return Record{}, err
			}
			// The record no longer reads back intact: it is lost; skip it.
			s.log.Error("spool: record corrupt on read; skipping", "segment", seg.path, "seq", loc.seq)
			s.cursor = loc.seq + 1
			s.mu.Unlock()
			if s.opts.OnCorrupt != nil {
				s.opts.OnCorrupt(seg.path, fmt.Errorf("record %d: %w", loc.seq, errRecordCorrupt))
			}
			s.Ack(loc.seq)
			continue
		}
		avail := s.avail
		s.mu.Unlock()
		select {
		case <-avail:
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-s.stop:
			return Record{}, ErrClosed
		}
	}
}

var errRecordCorrupt = errors.New("spool: record corrupt")

func (s *Spool) nextLocked() (*segment, recLoc, bool) {
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].first > s.cursor }) - 1
	i = max(i, 0)
	for ; i < len(s.segs); i++ {
		seg := s.segs[i]
		if seg.live == 0 {
			continue
		}
		j := sort.Search(len(seg.recs), func(j int) bool { return seg.recs[j].seq >= s.cursor })
		for ; j < len(seg.recs); j++ {
			if !seg.acked[j] {
				return seg, seg.recs[j], true
			}
		}
	}
	return nil, recLoc{}, false
}

func (s *Spool) readLocked(seg *segment, loc recLoc) (Record, error) {
	if seg.rf == nil {
		f, err := s.fs.OpenFile(seg.path, os.O_RDONLY, 0)
		if err != nil {
			return Record{}, fmt.Errorf("%w: %w", ErrDisk, err)
		}
		seg.rf = f
	}
	buf := make([]byte, loc.size)
	if _, err := seg.rf.ReadAt(buf, loc.off); err != nil {
		if errors.Is(err, io.EOF) {
			return Record{}, errRecordCorrupt
		}
		return Record{}, fmt.Errorf("%w: %w", ErrDisk, err)
	}
	if _, ok := parseRecord(buf, 0, loc.seq-1, loc.seq); !ok || loc.size != uint32(len(buf)) {
		return Record{}, errRecordCorrupt
	}
	return Record{Seq: loc.seq, Data: buf[headerSize:]}, nil
}

// Rewind makes Next start again at the oldest unacknowledged record (for
// when the consumer's connection died with records in flight).
func (s *Spool) Rewind() {
	s.mu.Lock()
	s.cursor = 0
	s.mu.Unlock()
}

// Ack marks the record seq as confirmed; acks may come in any order, and
// unknown or repeated seqs are ignored. Acks are not durable (see the
// package documentation). A segment whose records are all acknowledged and
// that is no longer written to is deleted in the background, followed by an
// fsync of the directory.
func (s *Spool) Ack(seq uint64) {
	s.mu.Lock()
	seg, j := s.find(seq)
	if seg == nil || seg.acked[j] {
		s.mu.Unlock()
		return
	}
	seg.acked[j] = true
	seg.live--
	s.live--
	n := int64(seg.recs[j].size)
	s.liveBytes -= n
	s.reserved -= n
	empty := seg.live == 0
	s.mu.Unlock()
	if empty {
		s.kick(s.kickClean)
	}
}

// deadLetterEntry is one line (JSON) of dead-letter.log.
type deadLetterEntry struct {
	Time   time.Time `json:"time"`
	Seq    uint64    `json:"seq"`
	Reason string    `json:"reason"`
	Data   string    `json:"data"` // base64 (standard encoding)
}

// DeadLetter appends the record and the reason as one JSON line
// ({"time","seq","reason","data" (base64)}) to dead-letter.log in the spool
// directory, fsyncs it, and then acknowledges seq.
func (s *Spool) DeadLetter(seq uint64, data []byte, reason string) error {
	line, err := json.Marshal(deadLetterEntry{
		Time: time.Now().UTC(), Seq: seq, Reason: reason,
		Data: base64.StdEncoding.EncodeToString(data),
	})
	if err != nil {
		return err
	}
	line = append(line, '\n')
	s.dlMu.Lock()
	defer s.dlMu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if s.dl == nil {
		f, err := s.fs.OpenFile(filepath.Join(s.dir, deadLetterName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrDisk, err)
		}
		if err := s.fs.SyncDir(s.dir); err != nil {
			f.Close()
			return fmt.Errorf("%w: %w", ErrDisk, err)
		}
		s.dl = f
	}
	if _, err := s.dl.Write(line); err == nil {
		err = s.dl.Datasync()
		if err != nil {
			s.dl.Close() // never reuse a descriptor whose fsync failed
			s.dl = nil
			return fmt.Errorf("%w: %w", ErrDisk, err)
		}
	} else {
		s.dl.Close()
		s.dl = nil
		return fmt.Errorf("%w: %w", ErrDisk, err)
	}
	s.Ack(seq)
	return nil
}

// Stats returns the number and the bytes (framing included) of the durable,
// unacknowledged records.
func (s *Spool) Stats() (messages int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live, s.liveBytes
}

// Close stops the spool: appends already handed to the writer are committed,
// later ones fail with ErrClosed, Next returns ErrClosed. Unacknowledged
// records stay on disk for the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	s.dlMu.Lock()
	defer s.dlMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeFiles()
	return nil
}

func (s *Spool) closeFiles() {
	for _, seg := range s.segs {
		if seg.rf != nil {
			seg.rf.Close()
			seg.rf = nil
		}
		if seg.wf != nil {
			seg.wf.Close()
			seg.wf = nil
		}
	}
	if s.dl != nil {
		s.dl.Close()
		s.dl = nil
	}
}
