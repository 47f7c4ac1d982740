package publisher

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Writes from many goroutines all arrive, each intact, and Close flushes.
func TestBatchConnDeliversEveryWrite(t *testing.T) {
	checkLeaksInternal(t)
	client, server := net.Pipe()
	b := newBatchConn(client)
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(server)
		got <- all
	}()
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := b.Write([]byte{byte('a' + w), '\n'}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	all := <-got
	if n := bytes.Count(all, []byte("\n")); n != writers*each {
		t.Fatalf("%d writes arrived, want %d", n, writers*each)
	}
	for w := range writers {
		if c := bytes.Count(all, []byte{byte('a' + w), '\n'}); c != each {
			t.Fatalf("writer %d: %d writes arrived intact, want %d", w, c, each)
		}
	}
}

// After the socket fails, every Write returns the error.
func TestBatchConnWriteErrorIsSticky(t *testing.T) {
	checkLeaksInternal(t)
	client, server := net.Pipe()
	server.Close()
	b := newBatchConn(client)
	defer b.Close()
	var err error
	for range 100 {
		if _, err = b.Write([]byte("x")); err != nil {
			break
		}
	}
	if err == nil {
		// The writer may not have failed yet; it must have by now.
		<-b.done
		_, err = b.Write([]byte("x"))
	}
	if !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("Write after the peer closed = %v, want io.ErrClosedPipe", err)
	}
}
