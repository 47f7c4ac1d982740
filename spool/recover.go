package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// recover rebuilds the index from the directory (called by Open).
func (s *Spool) recover() error {
	diskErr := func(err error) error { return fmt.Errorf("%w: %w", ErrDisk, err) }
	entries, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return diskErr(err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	var firsts, markers []uint64
	var floor uint64 // sequence numbers below it may have been used
	changed := false
	for _, e := range entries {
		name := e.Name()
		first, ok := parseSegName(name)
		switch {
		case name == spareName || name == watermarkName+".tmp":
			s.fs.Remove(filepath.Join(s.dir, name))
			changed = true
		case !ok:
			if next, ok := parseMarkerName(name); ok {
				markers = append(markers, next)
				floor = max(floor, next)
			}
		case name == fmt.Sprintf("%020d%s", first, segSuffix):
			firsts = append(firsts, first)
			floor = max(floor, first)
		case strings.HasSuffix(name, salvageSuffix):
			// A salvage interrupted by a crash: complete it if the
			// segment was already set aside, else start over.
			seg := strings.TrimSuffix(name, salvageSuffix)
			if names[seg] {
				s.fs.Remove(filepath.Join(s.dir, name))
			} else {
				if err := s.fs.Rename(filepath.Join(s.dir, name), filepath.Join(s.dir, seg)); err != nil {
					return diskErr(err)
				}
				names[seg] = true
				firsts = append(firsts, first)
			}
			changed = true
			floor = max(floor, first)
		default: // *.corrupt
			floor = max(floor, first)
		}
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	// Keep the greatest marker, unless a segment makes it redundant.
	sort.Slice(markers, func(i, j int) bool { return markers[i] < markers[j] })
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
	if changed {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return diskErr(err)
		}
	}

	var maxSeq uint64
	var buf []byte
	for i, first := range firsts {
		last := i == len(firsts)-1
		path := s.segPath(first)
		buf, err = readFile(s.fs, path, buf)
		after := maxSeq
		if first > 0 {
			after = max(after, first-1)
		}
		var recs []recLoc
		var end int64
		var cause error
		if err != nil {
			cause = err
		} else {
			recs, end = scanRecords(buf, 0, after)
			if !allZero(buf[end:]) {
				tailAfter := after
				if len(recs) > 0 {
					tailAfter = recs[len(recs)-1].seq
				}
				if extra := resync(buf, end, tailAfter); len(extra) > 0 {
					recs = append(recs, extra...)
					cause = fmt.Errorf("damaged record at offset %d followed by valid records", end)
				} else if !last {
					cause = fmt.Errorf("invalid data at offset %d of a sealed segment", end)
				}
			}
		}
		if len(recs) > 0 {
			maxSeq = recs[len(recs)-1].seq
		}
		seg := &segment{first: first, path: path}
		if cause != nil {
			lost := s.countLost(buf, first, recs, !last)
			if err := s.setAside(seg, buf, recs, cause, lost); err != nil {
				return err
			}
			if seg.recs == nil && !last {
				continue // nothing salvaged: no segment left
			}
			if seg.recs == nil {
				// Keep an empty newest segment: it carries the sequence on.
				if err := s.createEmpty(path); err != nil {
					return err
				}
			}
		} else {
			seg.recs = recs
			if last {
				s.reopenActive(seg, buf, end)
			}
		}
		seg.acked = make([]bool, len(seg.recs))
		seg.live = len(seg.recs)
		for _, r := range seg.recs {
			s.liveBytes += int64(r.size)
		}
		s.live += seg.live
		s.segs = append(s.segs, seg)
	}
	s.nextSeq = max(maxSeq+1, floor, 1)
	if w := s.w; w != nil {
		// Reused only if its records go on consecutively (a marker may
		// have moved the sequence past them).
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
		// An empty newest segment that could not be reused: skip its name.
		s.nextSeq = s.segs[n-1].first + 1
	}
	for _, seg := range s.segs {
		seg.next = s.nextSeq // an upper bound is enough (see markNext)
	}
	if s.live > 0 {
		s.log.Info("spool recovered", "records", s.live, "bytes", s.liveBytes, "segments", len(s.segs), "next_seq", s.nextSeq)
	}
	return nil
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
	diskErr := func(err error) error { return fmt.Errorf("%w: %w", ErrDisk, err) }
	salvage := seg.path + salvageSuffix
	var out []recLoc
	if len(recs) > 0 {
		f, err := s.fs.OpenFile(salvage, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return diskErr(err)
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
			return diskErr(err)
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
		return diskErr(err)
	}
	if len(recs) > 0 {
		if err := s.fs.Rename(salvage, seg.path); err != nil {
			return diskErr(err)
		}
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return diskErr(err)
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
