package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/publisher-dev/publisher/idempotency"
)

// Idempotency keys with a spool. A keyed message's record carries its key
// and fingerprint (record.go), so while it is spooled its key is as durable
// as the message. Once the broker confirmed it, the record is acked and may
// be deleted: the key is then kept in the journal, a file of one JSON line
// per confirmed key beside the spool, {"t": Unix ms, "s": scope, "k": key,
// "f": fingerprint (base64), "m": message id}, about 150 bytes a key with a
// UUID key and message id. RestoreKeys reads both back at start.
//
// The journal is written with write(2) on each confirm, before the record
// is acked, and never fsync'ed: what the process wrote survives SIGKILL
// (the kernel has it), and a crash of the machine loses at most the lines
// of its last moments, so that a retry of those messages is published
// again (a duplicate with the same message id, as the spool's own
// unsynced ack watermark may make). It is bounded without rewriting: it is
// two files, the current one and the one before ("<path>.old"); a new
// current file is started (the old one deleted) once the current one holds
// MaxKeys/2 lines or its first line is older than the window, so the two
// hold at most MaxKeys lines, and every line dropped is older than the
// window or beyond the store's bound anyway.
type journal struct {
	path     string
	window   time.Duration
	maxLines int
	log      *slog.Logger

	mu     sync.Mutex
	f      *os.File
	lines  int       // in the current file
	first  time.Time // of the current file's first line
	failed bool      // a write failed: logged once until one succeeds
}

// journalLine is one confirmed key.
type journalLine struct {
	T int64  `json:"t"`
	S string `json:"s"`
	K string `json:"k"`
	F []byte `json:"f"`
	M string `json:"m"`
}

// append writes the confirmed key of ref (message id) at now.
func (j *journal) append(ref KeyRef, id string, now time.Time) {
	line, err := json.Marshal(journalLine{T: now.UnixMilli(), S: ref.Key.Scope, K: ref.Key.Name, F: ref.Fingerprint[:], M: id})
	if err != nil {
		return
	}
	line = append(line, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.lines > 0 && (j.lines >= j.maxLines || now.Sub(j.first) >= j.window) {
		if j.f != nil {
			j.f.Close()
			j.f = nil
		}
		if err := os.Rename(j.path, j.path+".old"); err != nil && !errors.Is(err, os.ErrNotExist) {
			j.fail(err)
		}
		j.lines = 0
	}
	if j.f == nil {
		f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			j.fail(err)
			return
		}
		j.f = f
	}
	if _, err := j.f.Write(line); err != nil {
		j.fail(err)
		return
	}
	if j.lines == 0 {
		j.first = now
	}
	j.lines++
	j.failed = false
}

// fail logs the first of a run of failures: a journal that cannot be
// written only means keys forgotten by a restart, never a refused message.
func (j *journal) fail(err error) {
	if !j.failed {
		j.log.Warn("relay: the idempotency keys' journal cannot be written; a restart will forget the keys confirmed meanwhile", "file", j.path, "error", err)
	}
	j.failed = true
}

// load restores into keys the lines of both files still within the window
// (lines that do not decode, such as a torn last line, are skipped) and
// notes the current file's lines and age for append.
func (j *journal) load(keys *idempotency.Store, now time.Time) (restored int, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, p := range []string{j.path + ".old", j.path} {
		n, first, r, err := loadJournal(p, keys, now, j.window)
		if err != nil {
			return restored, err
		}
		restored += r
		if p == j.path {
			j.lines, j.first = n, first
		}
	}
	return restored, nil
}

func loadJournal(path string, keys *idempotency.Store, now time.Time, window time.Duration) (lines int, first time.Time, restored int, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, first, 0, nil
	}
	if err != nil {
		return 0, first, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		var l journalLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.K == "" || len(l.F) != len(idempotency.Fingerprint{}) {
			continue
		}
		t := time.UnixMilli(l.T)
		if lines == 0 {
			first = t
		}
		lines++
		if now.Sub(t) >= window {
			continue
		}
		var fp idempotency.Fingerprint
		copy(fp[:], l.F)
		keys.Restore(idempotency.Key{Scope: l.S, Name: l.K}, fp, idempotency.Answer{Code: 200, MessageID: l.M}, false, t)
		restored++
	}
	return lines, first, restored, sc.Err()
}

func (j *journal) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
}

// keyMarker is in the data of every record that has a key: RestoreKeys
// decodes only those.
var keyMarker = []byte(`"idem_key"`)

// RestoreKeys gives Config.Keys the keys an earlier process left: the
// journal's confirmed keys within the window (200), then the key of every
// spooled record not acked yet (202, made 200 by the forwarder's confirm).
// It reads every unacked record once with the spool's Next, then Rewinds,
// so it must run after the spool opened and before Serve or any Send; ctx
// bounds it (a spool of 1 GiB of records is read in seconds). It returns
// how many keys it restored.
func (r *Relay) RestoreKeys(ctx context.Context) (int, error) {
	keys := r.cfg.Keys
	if keys == nil {
		return 0, nil
	}
	now := time.Now()
	restored := 0
	if r.journal != nil {
		n, err := r.journal.load(keys, now)
		restored += n
		if err != nil {
			return restored, fmt.Errorf("relay: the idempotency keys' journal %s: %w", r.journal.path, err)
		}
	}
	defer r.sp.Rewind()
	// Nothing appends or acks meanwhile: the records left to read are the
	// live ones not returned yet (a record corrupt on read is acked by Next,
	// and so leaves the count).
	for n := 0; ; n++ {
		if live, _ := r.sp.Stats(); n >= live {
			return restored, nil
		}
		rec, err := r.sp.Next(ctx)
		if err != nil {
			return restored, fmt.Errorf("relay: reading the spool for its idempotency keys: %w", err)
		}
		if !bytes.Contains(rec.Data, keyMarker) {
			continue
		}
		_, _, msg, ref, err := decodeKeyedRecord(rec.Data)
		if err != nil || ref.Key.Name == "" {
			continue // the forwarder dead-letters what does not decode
		}
		keys.Restore(ref.Key, ref.Fingerprint, idempotency.Answer{Code: 202, MessageID: msg.MessageID}, true, now)
		restored++
	}
}

// CloseKeys closes the keys' journal (the service is stopping).
func (r *Relay) CloseKeys() {
	if r.journal != nil {
		r.journal.close()
	}
}

// keyConfirmed is the broker's confirm of a record with a key: the key is
// journaled and answers 200.
func (r *Relay) keyConfirmed(ref KeyRef, id string) {
	if ref.Key.Name == "" || r.cfg.Keys == nil {
		return
	}
	if r.journal != nil {
		r.journal.append(ref, id, time.Now())
	}
	r.cfg.Keys.Confirm(ref.Key, id)
}

// keyDropped forgets the key of a record dead-lettered: it was not
// published, and a retry is processed as new.
func (r *Relay) keyDropped(ref KeyRef, id string) {
	if ref.Key.Name == "" || r.cfg.Keys == nil {
		return
	}
	r.cfg.Keys.Drop(ref.Key, id)
}
