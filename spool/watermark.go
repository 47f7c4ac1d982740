package spool

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The ack watermark makes acknowledgements mostly survive a restart, to cut
// the duplicates a restart would otherwise publish: every record of a
// surviving segment. It is the highest W such that every record with seq <= W
// is acknowledged, written (write a temporary file, rename) to "acked" in the
// directory at most every watermarkInterval and on Close, without fsync: a
// lost or torn file only means more duplicates, never a loss, because W only
// ever covers records the broker confirmed and sequence numbers are never
// reused. For that, Open continues the sequence above W too: when the records
// up to W of the newest segment are lost to corruption (or it cannot be
// read), its name and what is left do not show how far the sequence went, and
// a record accepted then with a number <= W would be taken for acknowledged
// by the next Open unless a watermark was saved in between.
const (
	watermarkName     = "acked"
	watermarkInterval = 200 * time.Millisecond
)

// watermarkLocked computes W under s.mu; ok is false when the segments hold
// no record to tell from.
func (s *Spool) watermarkLocked() (w uint64, ok bool) {
	for _, seg := range s.segs {
		for j, loc := range seg.recs {
			if !seg.acked[j] {
				return loc.seq - 1, true
			}
			w, ok = loc.seq, true
		}
	}
	return w, ok
}

// readWatermark reads the saved watermark W; ok is false when there is none
// (or it cannot be read or parsed: then only more duplicates follow).
func (s *Spool) readWatermark() (w uint64, ok bool) {
	b, err := readSmall(s.fs, filepath.Join(s.dir, watermarkName))
	if err != nil {
		return 0, false
	}
	w, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		s.log.Warn("spool: ignoring an unreadable ack watermark", "err", err)
		return 0, false
	}
	return w, true
}

// applyWatermark marks the records <= w of the recovered segments
// acknowledged (called by recover, before any goroutine runs).
func (s *Spool) applyWatermark(w uint64) {
	for _, seg := range s.segs {
		for j, loc := range seg.recs {
			if loc.seq > w {
				return
			}
			if seg.acked[j] {
				continue
			}
			seg.acked[j] = true
			seg.live--
			s.live--
			s.liveBytes -= int64(loc.size)
		}
	}
}

func readSmall(fsys FS, path string) ([]byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 32)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}

// watermarker persists the watermark while the spool is open.
func (s *Spool) watermarker() {
	defer s.wg.Done()
	t := time.NewTicker(watermarkInterval)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-s.stop:
			s.saveWatermark(&last)
			return
		case <-t.C:
			s.saveWatermark(&last)
		}
	}
}

func (s *Spool) saveWatermark(last *uint64) {
	s.mu.Lock()
	w, ok := s.watermarkLocked()
	s.mu.Unlock()
	if !ok || w <= *last {
		return
	}
	tmp := filepath.Join(s.dir, watermarkName+".tmp")
	f, err := s.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	_, err = f.Write([]byte(strconv.FormatUint(w, 10) + "\n"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.fs.Rename(tmp, filepath.Join(s.dir, watermarkName))
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Debug("spool: cannot save the ack watermark", "err", err)
		return
	}
	*last = w
}
