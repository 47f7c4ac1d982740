package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/idempotency"
	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/spool"
)

func keyRef(name string) KeyRef {
	h := idempotency.NewHasher()
	h.String(name)
	return KeyRef{Key: idempotency.Key{Scope: "orders", Name: name}, Fingerprint: h.Sum()}
}

// A keyed record carries its key and fingerprint; a keyless one does not
// carry the fields at all (so records without keys are as before).
func TestRecordCarriesTheKey(t *testing.T) {
	msg := &publisher.Message{MessageID: "m", Exchange: "ex", Persistent: true}
	ref := keyRef("k-1")
	data, err := encodeRecord(1, 2, msg, ref)
	if err != nil {
		t.Fatal(err)
	}
	_, _, got, gotRef, err := decodeKeyedRecord(data)
	if err != nil || got.MessageID != "m" || gotRef != ref {
		t.Fatalf("decoded %+v %+v %v, want the key %+v", got, gotRef, err, ref)
	}
	plain, err := encodeRecord(1, 2, msg, KeyRef{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain), "idem") {
		t.Errorf("a keyless record names keys: %s", plain[1:])
	}
}

// openRelay opens dir's spool and a relay over it with keys and a journal.
func openRelay(t *testing.T, dir string, keys *idempotency.Store) (*Relay, *fakePublisher, *spool.Spool) {
	t.Helper()
	sp, err := spool.Open(dir, spool.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	r := New(Config{Spool: sp, Publisher: f, ConfirmTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Keys: keys, KeysFile: filepath.Join(dir, "idempotency.log")})
	return r, f, sp
}

func lookup(t *testing.T, keys *idempotency.Store, ref KeyRef) (idempotency.Result, idempotency.Answer) {
	t.Helper()
	c, res, ans := keys.Begin(ref.Key, ref.Fingerprint, "probe")
	c.Forget()
	return res, ans
}

// Keys survive a restart of the relay over the same spool directory: a
// record confirmed before (the journal) answers 200, a record still spooled
// answers 202 and becomes 200 once forwarded, a dead-lettered one is
// forgotten; a keyless record changes nothing.
func TestKeysSurviveARestart(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	confirmed, spooled, dead := keyRef("confirmed"), keyRef("spooled"), keyRef("dead")

	// The first process: three keyed records and a keyless one; the first
	// is confirmed, the rest stay spooled (the broker does not answer).
	r, f, sp := openRelay(t, dir, idempotency.NewStore(idempotency.Config{}))
	msgs := []*publisher.Message{
		{MessageID: "m-confirmed", Exchange: "ex"}, {MessageID: "m-spooled", Exchange: "ex"},
		{MessageID: "m-dead", Exchange: "ex"}, {MessageID: "m-plain", Exchange: "ex"},
	}
	_ = r.Send(context.Background(), msgs, SendOptions{Async: true, Keys: []KeyRef{confirmed, spooled, dead}},
		func(int, Delivery, error) {})
	stop := serve(t, r)
	f.waitSubmissions(t, 4)
	f.settle(nil)
	waitLive(t, sp, 3)
	stop()
	r.CloseKeys()
	sp.Close()

	// The next process.
	keys := idempotency.NewStore(idempotency.Config{})
	r, f, sp = openRelay(t, dir, keys)
	defer sp.Close()
	defer r.CloseKeys()
	n, err := r.RestoreKeys(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("RestoreKeys: %d, %v; want 3 keys", n, err)
	}
	for _, tc := range []struct {
		ref  KeyRef
		code int
		id   string
	}{{confirmed, 200, "m-confirmed"}, {spooled, 202, "m-spooled"}, {dead, 202, "m-dead"}} {
		if res, ans := lookup(t, keys, tc.ref); res != idempotency.Replayed || ans.Code != tc.code || ans.MessageID != tc.id {
			t.Errorf("%s after the restart: %v %+v, want %d of %s", tc.ref.Key.Name, res, ans, tc.code, tc.id)
		}
	}
	stop = serve(t, r)
	defer stop()
	f.waitSubmissions(t, 3) // RestoreKeys rewound: every unacked record is forwarded
	for _, m := range f.submitted {
		switch m.MessageID {
		case "m-spooled", "m-plain":
			f.settle(nil)
		case "m-dead":
			f.settle(&publisher.ChannelError{Code: 404, Reason: "NOT_FOUND"})
		}
	}
	waitLive(t, sp, 0)
	if res, ans := lookup(t, keys, spooled); res != idempotency.Replayed || ans.Code != 200 {
		t.Errorf("spooled key once forwarded: %v %+v, want 200", res, ans)
	}
	if res, _ := lookup(t, keys, dead); res != idempotency.New {
		t.Errorf("dead-lettered key: %v, want it forgotten", res)
	}
}

// The journal stays within MaxKeys lines over its two files, and what it
// drops is beyond the store's bound or the window.
func TestJournalBounded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "idempotency.log")
	j := &journal{path: path, window: time.Hour, maxLines: 5, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	start := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for i := range 23 {
		j.append(keyRef(fmt.Sprint(i)), fmt.Sprint("m", i), start.Add(time.Duration(i)*time.Second))
	}
	j.close()
	lines := 0
	for _, p := range []string{path, path + ".old"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		lines += strings.Count(string(b), "\n")
	}
	if lines != 8 { // 20..22 in the current file, 15..19 in the old one
		t.Errorf("%d lines in the journal, want 8", lines)
	}
	keys := idempotency.NewStore(idempotency.Config{Now: func() time.Time { return start.Add(time.Minute) }})
	n, err := (&journal{path: path, window: time.Hour, maxLines: 5}).load(keys, start.Add(time.Minute))
	if err != nil || n != 8 {
		t.Fatalf("load: %d, %v", n, err)
	}
	if res, _ := lookup(t, keys, keyRef("15")); res != idempotency.Replayed {
		t.Errorf("key 15: %v, want it restored", res)
	}
	// An hour later the current file is rotated away at the next line.
	j2 := &journal{path: path, window: time.Hour, maxLines: 5, log: j.log}
	if _, err := j2.load(idempotency.NewStore(idempotency.Config{}), start); err != nil {
		t.Fatal(err)
	}
	j2.append(keyRef("late"), "m-late", start.Add(2*time.Hour))
	j2.close()
	old, _ := os.ReadFile(path + ".old")
	cur, _ := os.ReadFile(path)
	if strings.Count(string(old), "\n") != 3 || strings.Count(string(cur), "\n") != 1 {
		t.Errorf("after an hour: old %q, current %q; want the 3 lines of 20..22 old and one new", old, cur)
	}
}
