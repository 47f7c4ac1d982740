// Package spool is a durable on-disk queue (a segment log) that holds
// messages between being accepted and being confirmed by the broker.
//
// # Files
//
// A spool directory holds segment files named after the sequence number of
// their first record ("%020d.seg"), "dead-letter.log", the ack watermark
// "acked" (see watermark.go), segments set aside as corrupt ("*.corrupt"),
// at most one sequence marker ("%020d.next", empty: see Sequence numbers),
// a zero-filled spare segment ("spare.tmp"), and transient "acked.tmp" and
// "*.salvage" files. Creating, renaming or deleting a segment or marker is
// followed by an fsync of the directory. The record format is described at
// headerSize. Open removes what an interrupted operation left ("spare.tmp",
// "acked.tmp", "*.salvage", redundant markers); a failed segment creation
// removes its partial file at once.
//
// # Segment size
//
// Segments are preallocated by writing zeros, so that fdatasync only ever
// overwrites allocated, written blocks and does not have to change file
// metadata; a spare is prepared in the background so that rolling to a new
// segment rarely waits for that. The size of a new segment (and of the
// spare) is computed when it is created, from S = Options.SegmentBytes,
// B = Options.MaxBytes and F = the bytes free on the volume at that moment
// (FS.FreeBytes, statfs(2)):
//
//	size = min(S, max(min(B/8, F/8), min(256 KiB, B/2)))
//
// so the active segment and the spare together take at most a quarter of B
// and of the free space (below 2 MiB free the 256 KiB floor applies, and it
// still keeps them within B). A record larger than that gets a segment of
// its own size. A segment is only created if F covers it, and the spare only
// if F is at least four times its size: when the volume is nearly full the
// spool stops there instead of writing partial files. Status.SegmentBytes
// reports the size in use. The newest segment found at Open is reused with
// its size.
//
// # Durability
//
// Append returns nil only after the record was written and the segment
// fdatasync'ed: such a record survives a crash of the process or of the
// machine. Group commit: a single writer goroutine takes every append waiting
// at that moment, writes them with one write and makes them durable with one
// fdatasync (two if the batch crosses into a new segment), then releases all
// of them.
//
// Acknowledgements (Ack) are not durable beyond the ack watermark: after a
// restart every record of a segment that still exists and is above the
// watermark is delivered again, so delivery is at-least-once. A segment
// file is deleted once all its records are acknowledged and it is no longer
// written to (the active segment is kept).
//
// # Sequence numbers
//
// Sequence numbers are assigned by the writer, increase strictly, are
// consecutive within a segment (a batch that failed ends its segment, and
// its numbers are skipped), and are never reused, also across restarts:
// Open continues after the greatest of the last record found, the names of
// the segment and "*.corrupt" files, the marker, and the ack watermark (see
// watermark.go). The marker exists
// because every segment may be reclaimed, the newest too (after a failed
// write left no active segment, and its records were then acknowledged):
// before the cleaner deletes the newest segment it creates the empty file
// "N.next", N being the next sequence number, and fsyncs the directory. An
// empty file needs no data block, so this works on a full volume. A marker
// is removed once a segment named N or higher exists or a greater marker
// replaced it.
//
// # Full and failing
//
// While the spool does not accept, Append fails at once, without disk I/O:
//
//   - Bound reached: ErrFull, when the record would make the live bytes
//     exceed Options.MaxBytes. Append accepts whatever fits again as soon as
//     acknowledgements free room; Status reports full from the first such
//     refusal until the live bytes are back at or below 7/8 of MaxBytes, so
//     that a spool at its bound does not flap (in Status and in the log)
//     with every acknowledgement.
//   - Volume full: ENOSPC or EDQUOT creating or writing a segment. Errors
//     match ErrNoSpace, and so ErrFull, and wrap the cause. The writer
//     looks at the free space (statfs, cheap) every 250 ms and at once when
//     the cleaner deleted files, and creates a segment as soon as the free
//     space covers it: the spool accepts again by itself, with no Append
//     needed to discover it.
//   - Failing: any other error creating, writing or fsyncing a segment
//     (EIO, EROFS, a failed fsync). Errors match ErrDisk and wrap the
//     cause. The writer retries by itself: it creates a new segment and,
//     as a probe, writes and fdatasyncs its first bytes. The k-th
//     consecutive failed attempt (k = 1 for the failure that started the
//     state) is retried after min(100 ms * 2^(k-1), 5 s); a failed attempt
//     on a full volume backs off the same way.
//
// A segment whose write or fsync failed is retired: its descriptor is never
// used again (after a failed fsync the kernel may have dropped the dirty
// pages, and a later fsync could succeed without them). Each change of state
// is logged once (accepting to full or failing, and back, with how long it
// lasted and how many appends were refused), never each refused Append.
//
// # Liveness
//
// Healthy reports a spool that cannot recover by itself: failing (ErrDisk)
// continuously for longer than Options.UnhealthyAfter (default 1 minute),
// or out of space while it holds no live record (something else fills the
// volume, or files it cannot remove) for longer than that. A spool full of
// its own unconfirmed records, or at its bound, is healthy: a restart would
// not help.
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
//
// # Loss report
//
// The records a corrupt segment lost are counted: sequence numbers are
// consecutive within a segment and a segment is named after its first
// record, so the numbers missing before and between the salvaged records
// are lost (exact); in a damaged tail of an older segment (where no later
// record bounds the count) every record whose framing (length, sequence
// number) is intact counts, plus one for damaged bytes after them (a lower
// bound). Damage at the end of the newest segment cannot be told from a torn
// write, whose appends never returned: it is not counted. For each lost
// record whose framing is intact (its CRC
// failed), Options.Describe is called on its (damaged) bytes, best-effort,
// to name it, e.g. by a message id. The segment, the count, and up to 32
// lost sequence numbers and names are logged in the "corrupt segment set
// aside" line, and passed to Options.OnLost. A record that no longer reads
// back intact in Next is reported the same way, as one lost record.
package spool

import (
	"context"
	"encoding/base64"
	"encoding/binary"
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
	"syscall"
	"time"
)

var (
	// ErrFull is returned by Append when the record would make the live
	// (unacknowledged) bytes exceed Options.MaxBytes; nothing is written.
	// ErrNoSpace matches it too.
	ErrFull = errors.New("spool: full")
	// ErrNoSpace is matched by the errors of a spool whose volume is full
	// (ENOSPC or EDQUOT, wrapped): it matches ErrFull, not ErrDisk. The
	// spool accepts again by itself once there is space (see the package
	// documentation).
	ErrNoSpace = fmt.Errorf("%w: no space left on the volume", ErrFull)
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("spool: closed")
	// ErrDisk wraps the operating system's error of a failed write, fsync,
	// or file creation (other than no space). The records of that batch are
	// not durable; the spool retries by itself in the background.
	ErrDisk = errors.New("spool: disk failure")
	// ErrTooLarge is returned by Append for a record over 4 GiB.
	ErrTooLarge = errors.New("spool: record too large")
)

// Options configures a Spool. Zero values take the defaults (filled in by
// Open, in one place).
type Options struct {
	// MaxBytes bounds the bytes of live (unacknowledged, plus being
	// appended) records, framing included. Default 1 GiB.
	MaxBytes int64
	// SegmentBytes is the largest preallocated size of a segment file; the
	// size in use also follows MaxBytes and the free space (see the package
	// documentation). A record larger than that gets a segment of its own
	// size. Default 64 MiB.
	SegmentBytes int64
	// UnhealthyAfter is how long the spool may fail, or be out of space
	// while holding no live record, before Healthy reports it. Default 1
	// minute.
	UnhealthyAfter time.Duration
	// Logger receives recovery, state-change and failure reports. Default:
	// discarded.
	Logger *slog.Logger
	// OnFsync is called after every successful data fsync of the writer,
	// from the writer goroutine, with its duration.
	OnFsync func(d time.Duration)
	// OnCorrupt is called (from Open, or from Next for a record that no
	// longer reads back intact) for every segment set aside as corrupt.
	OnCorrupt func(segment string, err error)
	// OnLost is called (from Open, or from Next) with the number of records
	// lost to corruption in segment, and the names Describe gave those of
	// them whose framing was intact (at most 32). See the package
	// documentation for how they are counted.
	OnLost func(segment string, lost int, ids []string)
	// Describe, if set, names a lost record from its (damaged) data, e.g.
	// by extracting a message id, for the loss report. It must not keep
	// data; a panic in it is recovered, and "" means no name.
	Describe func(data []byte) string
	// FS is the file system; default OSFS (tests inject faults here).
	FS FS

	// Tests only: the clock of the retry and liveness logic.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
}

// Record is one spooled message.
type Record struct {
	Seq  uint64
	Data []byte
}

const (
	segSuffix      = ".seg"
	markerSuffix   = ".next"
	corruptSuffix  = ".corrupt"
	salvageSuffix  = ".salvage"
	spareName      = "spare.tmp"
	deadLetterName = "dead-letter.log"
	maxBatchBytes  = 8 << 20

	defaultMaxBytes       = 1 << 30
	defaultSegmentBytes   = 64 << 20
	defaultUnhealthyAfter = time.Minute
)

type segment struct {
	first uint64
	path  string

	// Guarded by Spool.mu.
	recs   []recLoc
	acked  []bool
	live   int
	rf     File   // read handle, opened lazily
	active bool   // being written to: never deleted
	next   uint64 // once not active: no record of this or a later segment is below it

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
// DeadLetter, Stats, Status, Healthy and Close may be called concurrently;
// Next and Rewind are meant for one consumer.
//
// Goroutines: the writer owns the active segment, the sequence counter and
// the disk state (accepting, full, failing) with its retries; the cleaner
// deletes acknowledged segments and owns the markers; spareLoop prepares the
// spare; watermarker saves the ack watermark. Lock order: dlMu, then mu;
// spareMu is never held with another lock.
type Spool struct {
	dir   string
	opts  Options
	fs    FS
	log   *slog.Logger
	now   func() time.Time
	after func(time.Duration) <-chan time.Time

	reqs       chan *appendReq
	stop       chan struct{} // closed by Close
	writerDone chan struct{}
	needSpare  chan struct{}
	kickClean  chan struct{}
	spaceFreed chan struct{} // the cleaner deleted files: the writer may retry
	wg         sync.WaitGroup

	// Writer goroutine only (and Open, before it starts).
	w       *segment
	nextSeq uint64
	buf     []byte
	backoff time.Duration    // delay of the last retry scheduled; 0 while accepting
	retryC  <-chan time.Time // fires the next retry; nil while accepting

	// Cleaner goroutine only (and Open, before it starts).
	markers      []uint64 // sequence markers on disk, ascending
	markerFailed bool     // the last marker creation failed (logged)

	spareMu     sync.Mutex
	spare       File // zero-filled spareName, ready to become a segment
	spareSz     int64
	spareFailed bool // spareLoop only: the last attempt failed (logged)

	dlMu sync.Mutex
	dl   File

	mu        sync.Mutex
	closed    bool
	segs      []*segment // by first seq
	cursor    uint64     // Next returns the first unacked record with seq >= cursor
	avail     chan struct{}
	live      int
	liveBytes int64
	reserved  int64     // liveBytes + bytes of appends in progress
	idleSince time.Time // when live last became 0
	segBytes  int64     // Status.SegmentBytes; written by the writer
	// The disk state, written by the writer goroutine only.
	diskErr     error // nil while accepting; else matches ErrNoSpace or ErrDisk
	diskSince   time.Time
	diskRefused int // appends refused since diskSince
	// The bound state (see the package documentation), written by Append,
	// Ack and release.
	boundSince   time.Time // zero unless full for the bound
	boundRefused int
}

// Open opens (creating it if needed) the spool in dir and recovers its
// contents; see the package documentation for the recovery rules. It also
// creates the active segment if recovery left none: if that fails (no space,
// a disk error), Open still succeeds, the recovered records can be
// consumed, Status reports the state and the writer retries in the
// background. Open fails only if the directory cannot be created or read,
// or a salvage cannot be written.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = defaultMaxBytes
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = defaultSegmentBytes
	}
	if opts.SegmentBytes < headerSize {
		opts.SegmentBytes = headerSize
	}
	if opts.UnhealthyAfter <= 0 {
		opts.UnhealthyAfter = defaultUnhealthyAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.FS == nil {
		opts.FS = OSFS{}
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.after == nil {
		opts.after = time.After
	}
	s := &Spool{
		dir:        dir,
		opts:       opts,
		fs:         opts.FS,
		log:        opts.Logger.With("component", "spool", "dir", dir),
		now:        opts.now,
		after:      opts.after,
		reqs:       make(chan *appendReq, 4096),
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
		needSpare:  make(chan struct{}, 1),
		kickClean:  make(chan struct{}, 1),
		spaceFreed: make(chan struct{}, 1),
		avail:      make(chan struct{}),
	}
	if err := s.fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDisk, err)
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.reserved = s.liveBytes
	s.idleSince = s.now()
	if s.w == nil {
		if err := s.newSegment(0, false); err != nil {
			s.diskFailed(err)
		}
	}
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
// with the spool's state error while it does not accept (matching
// ErrNoSpace or ErrDisk: see Status), with an error matching ErrNoSpace or
// ErrDisk when the write or fsync of its batch failed, and with ErrClosed
// after Close. data is copied; the caller may reuse it. If ctx ends first,
// Append returns ctx.Err(), but the record may still become durable and be
// delivered (at-least-once).
func (s *Spool) Append(ctx context.Context, data []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	r, err := s.reserve(data)
	if err != nil {
		return 0, err
	}
	if err := s.enqueue(ctx, r); err != nil {
		return 0, err
	}
	return s.await(ctx, r)
}

// AppendBatch is Append for many records at once, which share the group
// commits of the writer (one write and one fdatasync for all of them that fit
// in the active segment). It returns one sequence number and one error per
// record, in order, with the semantics of Append for each: a record refused
// (ErrFull, ErrTooLarge, ErrClosed, a failed batch) does not stop the ones
// after it, which may still fit.
func (s *Spool) AppendBatch(ctx context.Context, data [][]byte) ([]uint64, []error) {
	seqs := make([]uint64, len(data))
	errs := make([]error, len(data))
	reqs := make([]*appendReq, len(data))
	for i, d := range data {
		if errs[i] = ctx.Err(); errs[i] != nil {
			continue
		}
		if reqs[i], errs[i] = s.reserve(d); errs[i] != nil {
			continue
		}
		if errs[i] = s.enqueue(ctx, reqs[i]); errs[i] != nil {
			reqs[i] = nil
		}
	}
	for i, r := range reqs {
		if r != nil {
			seqs[i], errs[i] = s.await(ctx, r)
		}
	}
	return seqs, errs
}

// reserve checks that data may be appended now and reserves its bytes
// against Options.MaxBytes; the request it returns carries a copy of data.
func (s *Spool) reserve(data []byte) (*appendReq, error) {
	size := int64(headerSize) + int64(len(data))
	if size > maxRecordSize {
		return nil, ErrTooLarge
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if err := s.diskErr; err != nil {
		s.diskRefused++
		s.mu.Unlock()
		return nil, err
	}
	if s.reserved+size > s.opts.MaxBytes {
		began := s.boundSince.IsZero()
		if began {
			s.boundSince = s.now()
			s.boundRefused = 0
		}
		s.boundRefused++
		reserved := s.reserved
		s.mu.Unlock()
		if began {
			s.log.Warn("spool full: MaxBytes reached; refusing appends", "max_bytes", s.opts.MaxBytes, "bytes", reserved)
		}
		return nil, ErrFull
	}
	s.reserved += size
	s.mu.Unlock()
	r := &appendReq{rec: make([]byte, size), done: make(chan error, 1)}
	copy(r.rec[headerSize:], data)
	return r, nil
}

// enqueue hands a reserved request to the writer (releasing its bytes if it
// cannot).
func (s *Spool) enqueue(ctx context.Context, r *appendReq) error {
	select {
	case s.reqs <- r:
		return nil
	case <-s.writerDone:
		s.release(int64(len(r.rec)))
		return ErrClosed
	case <-ctx.Done():
		s.release(int64(len(r.rec)))
		return ctx.Err()
	}
}

// await waits for the writer's verdict on an enqueued request.
func (s *Spool) await(ctx context.Context, r *appendReq) (uint64, error) {
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

// release returns n reserved bytes of appends that failed.
func (s *Spool) release(n int64) {
	s.mu.Lock()
	s.reserved -= n
	ended := s.boundEndLocked()
	s.mu.Unlock()
	ended()
}

// writer is the group-commit goroutine; it also retries while the spool
// does not accept.
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
		case <-s.retryC:
			s.retryC = nil
			s.retry(false)
			continue
		case <-s.spaceFreed:
			s.retry(true)
			continue
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
// with one write and one fdatasync, then rolls to a new segment for the
// rest. While the spool does not accept, the batch fails at once.
func (s *Spool) commit(batch []*appendReq) {
	for i := 0; i < len(batch); {
		if s.w == nil {
			if s.diskErr != nil { // appends queued before the state changed
				s.fail(batch[i:], s.diskErr, true)
				return
			}
			need := int64(len(batch[i].rec))
			if err := s.newSegment(need, false); err != nil {
				if isNoSpace(err) && need > s.segmentSize(s.freeBytes()) {
					// Only this oversized record does not fit.
					s.fail(batch[i:i+1], fmt.Errorf("%w: %w", ErrNoSpace, err), false)
					i++
					continue
				}
				s.diskFailed(err)
				s.fail(batch[i:], s.diskErr, false)
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
			if seg.off == 0 {
				s.discard(seg) // its name is needed for the next one
			} else {
				s.retire(seg)
			}
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
			s.diskFailed(err)
			s.fail(batch[start:], s.diskErr, false)
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

// fail fails the appends with err (refused: they count as refused by the
// current state).
func (s *Spool) fail(reqs []*appendReq, err error, refused bool) {
	var n int64
	for _, r := range reqs {
		n += int64(len(r.rec))
	}
	s.mu.Lock()
	s.reserved -= n
	if refused {
		s.diskRefused += len(reqs)
	}
	ended := s.boundEndLocked()
	s.mu.Unlock()
	ended()
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
	s.log.Debug("spool: write failed; retiring segment", "segment", seg.path, "err", err)
	if f, oerr := s.fs.OpenFile(seg.path, os.O_RDWR, 0); oerr == nil {
		if zerr := writeZeros(f, seg.off, seg.off+n); zerr == nil {
			zerr = f.Datasync()
			if zerr != nil {
				s.log.Debug("spool: could not clear failed batch", "segment", seg.path, "err", zerr)
			}
		}
		f.Close()
	}
	s.retire(seg)
}

// retire closes the active segment (rolling, or after a failure): it is
// never written to again, and the cleaner may delete it once its records
// are acknowledged.
func (s *Spool) retire(seg *segment) {
	seg.wf.Close()
	seg.wf = nil
	s.w = nil
	s.mu.Lock()
	seg.active = false
	seg.next = s.nextSeq
	s.mu.Unlock()
	s.kick(s.kickClean)
}

// discard drops the active segment while it holds no record (a record too
// large for it comes): newSegment reuses its name.
func (s *Spool) discard(seg *segment) {
	seg.wf.Close()
	seg.wf = nil
	s.w = nil
	s.mu.Lock()
	if n := len(s.segs); n > 0 && s.segs[n-1] == seg {
		s.segs[n-1] = nil
		s.segs = s.segs[:n-1]
	}
	s.mu.Unlock()
}

// errNoRoom is the cause of a segment creation refused before writing
// because the free space does not cover it.
func errNoRoom(free, need int64) error {
	return fmt.Errorf("%d bytes free for a segment of %d: %w", free, need, syscall.ENOSPC)
}

// newSegment creates the active segment, named s.nextSeq, of
// max(segmentSize, need) bytes: the spare if one is ready and at least need
// bytes, else a new zero-filled file (a write into written blocks needs no
// metadata change at fdatasync; fallocate's unwritten extents measured about
// 1.7x slower per fdatasync here), refused before any write if the free
// space does not cover it. With probe, the first bytes of the new segment
// are written and fdatasync'ed once more through its descriptor (a retry
// proving the disk works again). On failure nothing is left behind.
func (s *Spool) newSegment(need int64, probe bool) error {
	free := s.freeBytes()
	size := s.segmentSize(free)
	capacity := max(size, need)
	path := s.segPath(s.nextSeq)
	s.mu.Lock()
	s.segBytes = size
	s.mu.Unlock()
	s.spareMu.Lock()
	f, sz := s.spare, s.spareSz
	if f != nil && sz >= need {
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
		if free >= 0 && free < capacity {
			return errNoRoom(free, capacity)
		}
		// A file of this name can only be left from a failed creation.
		s.fs.Remove(path)
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
	if err == nil {
		err = s.fs.SyncDir(s.dir)
	}
	if err == nil && probe {
		if _, err = f.WriteAt(make([]byte, headerSize), 0); err == nil {
			err = f.Datasync()
		}
	}
	if err != nil {
		f.Close()
		s.fs.Remove(path)
		return err
	}
	seg := &segment{first: s.nextSeq, path: path, wf: f, cap: capacity, active: true}
	s.mu.Lock()
	s.segs = append(s.segs, seg)
	s.mu.Unlock()
	s.w = seg
	s.kick(s.kickClean) // a marker may have become redundant
	return nil
}

func (s *Spool) kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// spareLoop keeps one zero-filled, fsynced spare segment file ready, sized
// by segmentSize when it is made, and only if the free space is at least
// four times that.
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
		free := s.freeBytes()
		size := s.segmentSize(free)
		if free >= 0 && free/4 < size {
			continue // nearly full: the space is for records
		}
		err := s.makeSpare(path, size)
		if err == ErrClosed {
			continue
		}
		if err != nil {
			if !s.spareFailed {
				s.log.Warn("spool: cannot prepare spare segment", "err", err)
			}
			s.spareFailed = true
			continue
		}
		s.spareFailed = false
	}
}

// makeSpare writes the spare file; on failure nothing is left behind.
func (s *Spool) makeSpare(path string, size int64) error {
	f, err := s.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		s.fs.Remove(path)
		return err
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
		return err
	}
	s.spareMu.Lock()
	s.spare, s.spareSz = f, size
	s.spareMu.Unlock()
	return nil
}

// cleaner deletes segments whose records are all acknowledged and that are
// not written to, the newest too (once a marker carries the sequence on),
// and removes redundant markers. After removing files it tells the writer
// (space was freed). A dead newest segment whose marker could not be created
// is kept, and tried again a second later.
func (s *Spool) cleaner() {
	defer s.wg.Done()
	var again <-chan time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-s.kickClean:
		case <-again:
			again = nil
		}
		s.mu.Lock()
		var need uint64 // the newest segment is dead: its marker
		if n := len(s.segs); n > 0 && s.segs[n-1].live == 0 && !s.segs[n-1].active {
			need = s.segs[n-1].next
		}
		s.mu.Unlock()
		if need > s.markerMax() {
			s.markNext(need) // a failure keeps the segment below
		}
		var dead []*segment
		var newest uint64
		s.mu.Lock()
		keep := s.segs[:0]
		for i, seg := range s.segs {
			dead1 := seg.live == 0 && !seg.active
			if dead1 && i == len(s.segs)-1 && seg.next > s.markerMax() {
				dead1 = false
				again = time.After(time.Second)
			}
			if !dead1 {
				keep = append(keep, seg)
				continue
			}
			dead = append(dead, seg)
			if seg.rf != nil {
				seg.rf.Close()
				seg.rf = nil
			}
		}
		clear(s.segs[len(keep):])
		s.segs = keep
		if len(s.segs) > 0 {
			newest = s.segs[len(s.segs)-1].first
		}
		s.mu.Unlock()
		removed := false
		for _, seg := range dead {
			if err := s.fs.Remove(seg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("spool: cannot delete segment", "segment", seg.path, "err", err)
				continue
			}
			removed = true
		}
		// Markers made redundant by a greater one or by a segment.
		top := len(s.markers) - 1
		keepM := s.markers[:0]
		for i, m := range s.markers {
			if i == top && m > newest {
				keepM = append(keepM, m)
				continue
			}
			if err := s.fs.Remove(s.markerPath(m)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				keepM = append(keepM, m)
				continue
			}
			removed = true
		}
		s.markers = keepM
		if !removed {
			continue
		}
		if err := s.fs.SyncDir(s.dir); err != nil {
			s.log.Warn("spool: directory fsync failed", "err", err)
		}
		s.kick(s.spaceFreed)
	}
}

func (s *Spool) markerPath(next uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", next, markerSuffix))
}

// markerMax returns the greatest marker on disk, 0 if none (cleaner only).
func (s *Spool) markerMax() uint64 {
	if n := len(s.markers); n > 0 {
		return s.markers[n-1]
	}
	return 0
}

// markNext creates the durable marker "next.next" (cleaner only).
func (s *Spool) markNext(next uint64) {
	f, err := s.fs.OpenFile(s.markerPath(next), os.O_WRONLY|os.O_CREATE, 0o600)
	if err == nil {
		err = f.Close()
		if err == nil {
			err = s.fs.SyncDir(s.dir)
		}
	}
	if err != nil {
		if !s.markerFailed {
			s.log.Warn("spool: cannot create the sequence marker; keeping the newest segment", "marker", s.markerPath(next), "err", err)
		}
		s.markerFailed = true
		return
	}
	s.markerFailed = false
	s.markers = append(s.markers, next)
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
//
// Once ctx has ended, Next returns ctx.Err() without handing out a record or
// moving the cursor, even if a record is there: ctx is checked under the
// lock that guards the cursor, in the same hold that takes the record. So a
// consumer that was told to stop (and may have been replaced by one that
// called Rewind) never takes a record it would not deliver, which would move
// the cursor past that record until the next Rewind.
func (s *Spool) Next(ctx context.Context) (Record, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return Record{}, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			s.mu.Unlock()
			return Record{}, err
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
			s.cursor = loc.seq + 1
			s.mu.Unlock()
			var l lossReport
			l.add(loc.seq, s.describe(rec.Data))
			s.log.Error("spool: record corrupt on read; skipping", append([]any{"segment", seg.path, "seq", loc.seq}, l.attrs()...)...)
			if s.opts.OnCorrupt != nil {
				s.opts.OnCorrupt(seg.path, fmt.Errorf("record %d: %w", loc.seq, errRecordCorrupt))
			}
			s.reportLost(seg.path, &l)
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

// readLocked reads the record at loc. A record that does not read back
// intact is errRecordCorrupt, with its bytes as Data if its framing is.
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
		if binary.LittleEndian.Uint32(buf[0:4]) == loc.size {
			return Record{Seq: loc.seq, Data: buf[headerSize:]}, errRecordCorrupt
		}
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
	if s.live == 0 {
		s.idleSince = s.now()
	}
	empty := seg.live == 0
	ended := s.boundEndLocked()
	s.mu.Unlock()
	ended()
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
