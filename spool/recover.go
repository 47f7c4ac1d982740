package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// parseSegName returns the first sequence number encoded in a segment file
// name ("%020d.seg", optionally followed by more suffixes).
func parseSegName(name string) (uint64, bool) {
	if len(name) < 20+len(segSuffix) || name[20:20+len(segSuffix)] != segSuffix {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:20], 10, 64)
	return n, err == nil
}

// parseMarkerName returns the sequence number of a marker ("%020d.next").
func parseMarkerName(name string) (uint64, bool) {
	if len(name) != 20+len(markerSuffix) || name[20:] != markerSuffix {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:20], 10, 64)
	return n, err == nil
}

// recover rebuilds the index from the directory (called by Open), in three
// steps: tidy the directory (scanDir, pruneMarkers, then one fsync), load
// every segment in order (loadSegments), settle the next sequence number
// (settleNextSeq); then it applies the ack watermark.
func (s *Spool) recover() error {
	d, err := s.scanDir()
	if err != nil {
		return err
	}
	if s.pruneMarkers(d.firsts, d.markers) {
		d.changed = true
	}
	if d.changed {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return diskError(err)
		}
	}
	w, haveW := s.readWatermark()
	if haveW && w < math.MaxUint64 {
		d.floor = max(d.floor, w+1) // the numbers up to w were used (see watermark.go)
	}
	maxSeq, err := s.loadSegments(d.firsts)
	if err != nil {
		return err
	}
	s.settleNextSeq(maxSeq, d.floor)
	if haveW {
		s.applyWatermark(w)
	}
	if s.live > 0 {
		s.log.Info("spool recovered", "records", s.live, "bytes", s.liveBytes, "segments", len(s.segs), "next_seq", s.nextSeq)
	}
	return nil
}

// diskError is the error of a failed file operation during recovery.
func diskError(err error) error { return fmt.Errorf("%w: %w", ErrDisk, err) }

// dirScan is what scanDir found in the spool directory.
type dirScan struct {
	firsts  []uint64 // the segments to load, by first sequence number, ascending
	markers []uint64 // the sequence markers, ascending
	floor   uint64   // sequence numbers below it may have been used
	changed bool     // a file was removed or renamed: the directory needs an fsync
}

// scanDir lists the spool directory: it removes what an interrupted operation
// left (the spare, the watermark's temporary file), completes or starts over
// an interrupted salvage, and collects the segments and markers, and the
// floor of the sequence from their names and those of the "*.corrupt" files.
func (s *Spool) scanDir() (dirScan, error) {
	var d dirScan
	entries, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return d, diskError(err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	for _, e := range entries {
		name := e.Name()
		first, ok := parseSegName(name)
		switch {
		case name == spareName || name == watermarkName+".tmp":
			s.fs.Remove(filepath.Join(s.dir, name))
			d.changed = true
		case !ok:
			if next, ok := parseMarkerName(name); ok {
				d.markers = append(d.markers, next)
				d.floor = max(d.floor, next)
			}
		case name == fmt.Sprintf("%020d%s", first, segSuffix):
			d.firsts = append(d.firsts, first)
			d.floor = max(d.floor, first)
		case strings.HasSuffix(name, salvageSuffix):
			// A salvage interrupted by a crash: complete it if the
			// segment was already set aside, else start over.
			seg := strings.TrimSuffix(name, salvageSuffix)
			if names[seg] {
				s.fs.Remove(filepath.Join(s.dir, name))
			} else {
				if err := s.fs.Rename(filepath.Join(s.dir, name), filepath.Join(s.dir, seg)); err != nil {
					return d, diskError(err)
				}
				names[seg] = true
				d.firsts = append(d.firsts, first)
			}
			d.changed = true
			d.floor = max(d.floor, first)
		default: // *.corrupt
			d.floor = max(d.floor, first)
		}
	}
	sort.Slice(d.firsts, func(i, j int) bool { return d.firsts[i] < d.firsts[j] })
	sort.Slice(d.markers, func(i, j int) bool { return d.markers[i] < d.markers[j] })
	return d, nil
}

// pruneMarkers keeps the greatest marker (in s.markers, for the cleaner)
// unless a segment at or above it makes it redundant, and removes the others;
// a marker whose removal failed is left to the cleaner. It reports whether it
// tried to remove any.
func (s *Spool) pruneMarkers(firsts, markers []uint64) (changed bool) {
	for i, m := range markers {
		if i == len(markers)-1 && (len(firsts) == 0 || m > firsts[len(firsts)-1]) {
			s.markers = []uint64{m}
			break
		}
		if err := s.fs.Remove(s.markerPath(m)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.markers = append(s.markers, m) // tried again by the cleaner
		}
		changed = true
	}
	return changed
}

// loadSegments reads the segments in order, sets aside the corrupt ones
// (keeping what can be read of them), makes the newest one active again
// when it is sound, and adds them to the index. It returns the greatest
// sequence number of a record found.
func (s *Spool) loadSegments(firsts []uint64) (maxSeq uint64, err error) {
	var buf []byte
	for i, first := range firsts {
		newest := i == len(firsts)-1
		path := s.segPath(first)
		var readErr error
		buf, readErr = readFile(s.fs, path, buf)
		after := maxSeq // the records of this segment come after it
		if first > 0 {
			after = max(after, first-1)
		}
		recs, end, cause := checkSegment(buf, readErr, after, newest)
		if len(recs) > 0 {
			maxSeq = recs[len(recs)-1].seq
		}
		seg := &segment{first: first, path: path}
		if cause != nil {
			keep, err := s.setAsideCorrupt(seg, buf, recs, cause, newest)
			if err != nil {
				return 0, err
			}
			if !keep {
				continue
			}
		} else {
			seg.recs = recs
			if newest {
				s.reopenActive(seg, buf, end)
			}
		}
		s.index(seg)
	}
	return maxSeq, nil
}

// checkSegment finds the valid records in buf, the bytes of a segment (read
// with readErr) whose records come after sequence number after, and the
// offset end where its valid data ends. cause says why the segment must be
// set aside as corrupt, nil if it need not: it could not be read, valid
// records follow damaged bytes, or anything but zeros follows the valid data
// of a segment other than the newest (in the newest that is a torn write).
func checkSegment(buf []byte, readErr error, after uint64, newest bool) (recs []recLoc, end int64, cause error) {
	if readErr != nil {
		return nil, 0, readErr
	}
	recs, end = scanRecords(buf, 0, after)
	if allZero(buf[end:]) {
		return recs, end, nil
	}
	tailAfter := after
	if len(recs) > 0 {
		tailAfter = recs[len(recs)-1].seq
	}
	if extra := resync(buf, end, tailAfter); len(extra) > 0 {
		return append(recs, extra...), end, fmt.Errorf("damaged record at offset %d followed by valid records", end)
	}
	if !newest {
		return recs, end, fmt.Errorf("invalid data at offset %d of a sealed segment", end)
	}
	return recs, end, nil
}

// setAsideCorrupt reports the loss and sets the corrupt segment seg aside,
// copying the records recs that could be read into a new segment of its name
// (setAside). It reports whether a segment is left to index: one with
// salvaged records, or the newest one, recreated empty if nothing could be
// salvaged, since its name carries the sequence on.
func (s *Spool) setAsideCorrupt(seg *segment, buf []byte, recs []recLoc, cause error, newest bool) (keep bool, err error) {
	lost := s.countLost(buf, seg.first, recs, !newest)
	if err := s.setAside(seg, buf, recs, cause, lost); err != nil {
		return false, err
	}
	if seg.recs != nil {
		return true, nil
	}
	if !newest {
		return false, nil // nothing salvaged: no segment left
	}
	if err := s.createEmpty(seg.path); err != nil {
		return false, err
	}
	return true, nil
}

// index adds a loaded segment to the index, all its records live.
func (s *Spool) index(seg *segment) {
	seg.acked = make([]bool, len(seg.recs))
	seg.live = len(seg.recs)
	for _, r := range seg.recs {
		s.liveBytes += int64(r.size)
	}
	s.live += seg.live
	s.segs = append(s.segs, seg)
}

// settleNextSeq sets the next sequence number: after maxSeq, the greatest
// record found, at least floor (from the file names) and at least 1. The
// reopened newest segment stays active only if its records go on
// consecutively to it (a marker may have moved the sequence past them); an
// empty newest segment that cannot be reused has its name skipped. Every
// segment's next is set to the result, an upper bound (see markNext).
func (s *Spool) settleNextSeq(maxSeq, floor uint64) {
	s.nextSeq = max(maxSeq+1, floor, 1)
	if w := s.w; w != nil {
		next := w.first
		if n := len(w.recs); n > 0 {
			next = w.recs[n-1].seq + 1
		}
		if next < s.nextSeq {
			w.wf.Close()
			w.wf, w.active, s.w = nil, false, nil
		} else {
			s.nextSeq = next
		}
	}
	if n := len(s.segs); n > 0 && s.segs[n-1].first >= s.nextSeq {
		s.nextSeq = s.segs[n-1].first + 1
	}
	for _, seg := range s.segs {
		seg.next = s.nextSeq
	}
}

// readFile reads the whole file into buf (reused if large enough).
func readFile(fsys FS, path string, buf []byte) ([]byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return buf[:0], err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return buf[:0], err
	}
	n := fi.Size()
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	m, err := f.ReadAt(buf, 0)
	if err == io.EOF {
		err = nil
	}
	return buf[:m], err
}

// reopenActive makes the newest segment the active one again, zeroing a
// torn tail after its valid data. If that is not possible, it stays sealed
// (the writer then starts a new segment; a later recovery will salvage it).
func (s *Spool) reopenActive(seg *segment, buf []byte, end int64) {
	f, err := s.fs.OpenFile(seg.path, os.O_RDWR, 0)
	if err != nil {
		s.log.Warn("spool: cannot reopen newest segment", "segment", seg.path, "err", err)
		return
	}
	size := int64(len(buf))
	if !allZero(buf[end:]) {
		last := size
		for last > end && buf[last-1] == 0 {
			last--
		}
		s.log.Warn("spool: zeroing torn tail", "segment", seg.path, "offset", end, "bytes", last-end)
		if err = writeZeros(f, end, last); err == nil {
			err = f.Datasync()
		}
	}
	// Reused with its size; a file shorter than the sizing rule (created
	// empty, or by an interrupted creation) is grown, if there is space.
	capacity := size
	if want := s.segmentSize(s.freeBytes()); err == nil && size < want {
		err = f.Allocate(want)
		if err == nil {
			err = f.Sync()
		}
		switch {
		case err == nil:
			capacity = want
		case isNoSpace(err) && size >= end+headerSize:
			err = nil // there is room for records as it is
		}
	}
	if err != nil {
		s.log.Warn("spool: cannot reuse newest segment", "segment", seg.path, "err", err)
		f.Close()
		return
	}
	seg.wf, seg.off, seg.cap, seg.active = f, end, capacity, true
	s.w = seg
	s.segBytes = capacity
}

// setAside renames a corrupt segment to *.corrupt, after copying the valid
// records recs (offsets into buf) into a new segment file of the same name.
// On return seg.recs holds the salvaged records (nil if none).
//
// The loss report lost is logged with it and passed to OnLost.
func (s *Spool) setAside(seg *segment, buf []byte, recs []recLoc, cause error, lost *lossReport) error {
	s.log.Error("spool: corrupt segment set aside", append([]any{"segment", seg.path, "err", cause, "salvaged_records", len(recs)}, lost.attrs()...)...)
	if s.opts.OnCorrupt != nil {
		s.opts.OnCorrupt(seg.path, cause)
	}
	s.reportLost(seg.path, lost)
	salvage := seg.path + salvageSuffix
	var out []recLoc
	if len(recs) > 0 {
		f, err := s.fs.OpenFile(salvage, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return diskError(err)
		}
		data := make([]byte, 0, len(recs)*headerSize)
		for _, r := range recs {
			out = append(out, recLoc{seq: r.seq, off: int64(len(data)), size: r.size})
			data = append(data, buf[r.off:r.off+int64(r.size)]...)
		}
		if _, err = f.WriteAt(data, 0); err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			s.fs.Remove(salvage)
			return diskError(err)
		}
	}
	target := seg.path + corruptSuffix
	for i := 1; ; i++ {
		f, err := s.fs.OpenFile(target, os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err == nil {
			f.Close()
		}
		target = fmt.Sprintf("%s.%d%s", seg.path, i, corruptSuffix)
	}
	if err := s.fs.Rename(seg.path, target); err != nil {
		return diskError(err)
	}
	if len(recs) > 0 {
		if err := s.fs.Rename(salvage, seg.path); err != nil {
			return diskError(err)
		}
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return diskError(err)
	}
	seg.recs = out
	return nil
}

func (s *Spool) createEmpty(path string) error {
	f, err := s.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = f.Close()
		if err == nil {
			err = s.fs.SyncDir(s.dir)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDisk, err)
	}
	return nil
}
