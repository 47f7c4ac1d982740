package spool

import (
	"encoding/binary"
	"hash/crc32"
)

// Record framing (all integers little-endian):
//
//	offset 0  uint32 total length of the record, header included (>= 16)
//	offset 4  uint32 CRC-32C (Castagnoli) of seq[8] || length[4] || data
//	offset 8  uint64 sequence number
//	offset 16 data (length-16 bytes)
//
// Records follow each other without padding. A length below 16 (a zeroed
// header has length 0), a length running past the end of the file, a
// sequence number not greater than the previous one, or a CRC mismatch
// marks the end of valid data. Because the CRC covers the sequence number,
// bytes left from an earlier record can never validate at a position where
// a later sequence number is expected.
const headerSize = 16

// maxRecordSize is the largest framed record (the length field is 32 bits).
const maxRecordSize = 1<<32 - 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recLoc locates one record inside a segment file.
type recLoc struct {
	seq  uint64
	off  int64
	size uint32 // framed size, header included
}

// recordCRC computes the CRC of a framed record whose header fields
// (length, seq) are already filled in.
func recordCRC(rec []byte) uint32 {
	var pre [12]byte
	copy(pre[:8], rec[8:16])
	copy(pre[8:], rec[0:4])
	c := crc32.Update(0, castagnoli, pre[:])
	return crc32.Update(c, castagnoli, rec[headerSize:])
}

// sealRecord fills in the header of rec (len(rec) >= headerSize, data at
// rec[headerSize:]) for sequence number seq.
func sealRecord(rec []byte, seq uint64) {
	binary.LittleEndian.PutUint32(rec[0:4], uint32(len(rec)))
	binary.LittleEndian.PutUint64(rec[8:16], seq)
	binary.LittleEndian.PutUint32(rec[4:8], recordCRC(rec))
}

// parseRecord checks for a valid record at buf[off:] with a sequence number
// in (after, limit]. It returns the record's location and whether it is valid.
func parseRecord(buf []byte, off int64, after, limit uint64) (recLoc, bool) {
	if off < 0 || off+headerSize > int64(len(buf)) {
		return recLoc{}, false
	}
	h := buf[off:]
	n := binary.LittleEndian.Uint32(h[0:4])
	if n < headerSize || off+int64(n) > int64(len(buf)) {
		return recLoc{}, false
	}
	seq := binary.LittleEndian.Uint64(h[8:16])
	if seq <= after || seq > limit {
		return recLoc{}, false
	}
	if binary.LittleEndian.Uint32(h[4:8]) != recordCRC(h[:n]) {
		return recLoc{}, false
	}
	return recLoc{seq: seq, off: off, size: n}, true
}

// scanRecords returns the valid records starting at buf[off:], each with a
// greater sequence number than the one before (the first greater than
// after), and the offset where valid data ends.
func scanRecords(buf []byte, off int64, after uint64) ([]recLoc, int64) {
	var recs []recLoc
	for {
		r, ok := parseRecord(buf, off, after, ^uint64(0))
		if !ok {
			return recs, off
		}
		recs = append(recs, r)
		after = r.seq
		off += int64(r.size)
	}
}

// resync looks past a damaged region for more valid records: it tries every
// offset after off for a record whose sequence number is greater than after
// (and plausibly close to it), and scans on from there, repeating after
// further damage. It returns the records found.
func resync(buf []byte, off int64, after uint64) []recLoc {
	var found []recLoc
	for off++; off+headerSize <= int64(len(buf)); off++ {
		// At most one record per headerSize bytes can have been written
		// since the last valid sequence number.
		limit := after + uint64(len(buf))/headerSize + 1
		if _, ok := parseRecord(buf, off, after, limit); !ok {
			continue
		}
		recs, end := scanRecords(buf, off, after)
		found = append(found, recs...)
		after = recs[len(recs)-1].seq
		off = end // loop's off++ moves past the first invalid byte
	}
	return found
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
