package spool

import (
	"os"
	"testing"
)

func TestDebugScan(t *testing.T) {
	p := os.Getenv("DBG_FILE")
	if p == "" {
		t.Skip()
	}
	data, _ := os.ReadFile(p)
	recs, end := scanRecords(data, 0, 79)
	for _, r := range recs {
		t.Logf("%d off %d size %d", r.seq, r.off, r.size)
	}
	t.Logf("end %d len %d", end, len(data))
}
