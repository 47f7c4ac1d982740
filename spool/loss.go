package spool

import (
	"bytes"
	"encoding/binary"
)

// maxLostListed caps the lost sequence numbers and names that a loss report
// lists (the count is exact).
const maxLostListed = 32

// lossReport accumulates the records lost in one segment.
type lossReport struct {
	count int
	seqs  []uint64 // the first maxLostListed
	ids   []string // the first maxLostListed non-empty names
}

func (l *lossReport) add(seq uint64, id string) {
	l.count++
	if len(l.seqs) < maxLostListed {
		l.seqs = append(l.seqs, seq)
	}
	if id != "" && len(l.ids) < maxLostListed {
		l.ids = append(l.ids, id)
	}
}

// addRange adds the records [from, to), whose bytes are unknown.
func (l *lossReport) addRange(from, to uint64) {
	if to <= from {
		return
	}
	l.count += int(to - from)
	for seq := from; seq < to && len(l.seqs) < maxLostListed; seq++ {
		l.seqs = append(l.seqs, seq)
	}
}

// attrs are the report's log attributes.
func (l *lossReport) attrs() []any {
	return []any{"lost_records", l.count, "lost_seqs", l.seqs, "lost_ids", l.ids}
}

// describe names a record by Options.Describe, best-effort: a panic in it
// is recovered, and it gets a copy of data.
func (s *Spool) describe(data []byte) (id string) {
	if s.opts.Describe == nil || data == nil {
		return ""
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Debug("spool: Options.Describe panicked", "panic", r)
			id = ""
		}
	}()
	return s.opts.Describe(bytes.Clone(data))
}

// reportLost calls Options.OnLost for a non-empty report.
func (s *Spool) reportLost(segment string, l *lossReport) {
	if l.count > 0 && s.opts.OnLost != nil {
		s.opts.OnLost(segment, l.count, l.ids)
	}
}

// countLost counts the records a damaged segment lost (see "Loss report" in
// the package documentation): buf is its content, first the sequence number
// it is named after, recs the valid records found in it (ascending), and
// older whether it is an older segment (its damaged tail counts) rather than
// the newest (where a damaged tail is a torn write).
func (s *Spool) countLost(buf []byte, first uint64, recs []recLoc, older bool) *lossReport {
	l := &lossReport{}
	// walk adds the records with intact framing from off on, numbered from
	// seq while below limit and ending by bound; it returns where it
	// stopped.
	walk := func(off, bound int64, seq, limit uint64) (int64, uint64) {
		for seq < limit && off+headerSize <= bound {
			n := int64(binary.LittleEndian.Uint32(buf[off:]))
			got := binary.LittleEndian.Uint64(buf[off+8:])
			if n < headerSize || off+n > bound || (got != seq && off+n != bound) {
				break
			}
			l.add(seq, s.describe(buf[off+headerSize:off+n]))
			off += n
			seq++
		}
		return off, seq
	}
	var end int64 // of the last valid record
	seq := first  // the next expected
	for _, r := range recs {
		if r.seq > seq {
			_, next := walk(end, r.off, seq, r.seq)
			l.addRange(next, r.seq)
		}
		end, seq = r.off+int64(r.size), r.seq+1
	}
	if older && !allZero(buf[end:]) {
		off, next := walk(end, int64(len(buf)), seq, ^uint64(0))
		if !allZero(buf[off:]) {
			l.add(next, "")
		}
	}
	return l
}
