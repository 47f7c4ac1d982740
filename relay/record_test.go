package relay

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/publisher"
	"github.com/publisher-dev/publisher/spool"
)

// copyDir copies the files of src into a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// A spool directory written by the code of before the record format was
// versioned (testdata/spool-v1) replays after the change: every message is
// forwarded, field for field, in order.
func TestVersion1SpoolReplays(t *testing.T) {
	noLeaks(t)
	dir := copyDir(t, "testdata/spool-v1")
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	f := newFake()
	r := New(Config{Spool: sp, Publisher: f, ConfirmTimeout: 50 * time.Millisecond})
	defer serve(t, r)()
	want := v1Messages()
	f.waitSubmissions(t, len(want))
	for i, w := range want {
		if w.Headers != nil {
			w.Headers["attempt"] = int64(3) // a whole number reads back as int64
		}
		got := f.submitted[i]
		if !reflect.DeepEqual(got, w) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, got, w)
		}
	}
	for range want {
		f.settle(nil)
	}
	waitLive(t, sp, 0)
}

func TestRecordRoundTrip(t *testing.T) {
	for _, m := range append(v1Messages(), &publisher.Message{
		MessageID: "nested", Headers: map[string]any{
			"n": int64(1) << 40, "f": 1.5, "neg": int64(-7), "s": "x", "b": false,
			"table": map[string]any{"i": int64(2)}, "list": []any{int64(1), "two", 3.25},
		},
	}) {
		data, err := encodeRecord(7, 9, m, KeyRef{})
		if err != nil {
			t.Fatal(err)
		}
		if data[0] != recordVersion2 {
			t.Fatalf("version byte 0x%02x", data[0])
		}
		nonce, rid, got, err := decodeRecord(data)
		if err != nil || nonce != 7 || rid != 9 {
			t.Fatalf("decode: %v %d %d", err, nonce, rid)
		}
		if m.Headers["attempt"] != nil {
			m.Headers["attempt"] = int64(3)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, m)
		}
		if id := MessageIDOf(data); id != m.MessageID {
			t.Errorf("MessageIDOf = %q, want %q", id, m.MessageID)
		}
	}
}

func TestUndecodableRecords(t *testing.T) {
	for _, data := range [][]byte{nil, {0x7f, 'x'}, {recordVersion2, '{'}, []byte(`{"n":1}`)} {
		if _, _, _, err := decodeRecord(data); err == nil {
			t.Errorf("decodeRecord(%q) = nil error", data)
		}
	}
	damaged := append([]byte{recordVersion2}, []byte(`{"nonce":1,"rid":2,"message_id":"order-42","exchange":"ev`)...)
	if id := MessageIDOf(damaged); id != "order-42" {
		t.Errorf("MessageIDOf(damaged) = %q", id)
	}
	if id := MessageIDOf([]byte(`{"n":1,"r":2,"m":{"Exchange":"x","MessageID":"old-1","Bo`)); id != "old-1" {
		t.Errorf("MessageIDOf(damaged v1) = %q", id)
	}
}
