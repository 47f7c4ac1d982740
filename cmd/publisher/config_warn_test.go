package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// What the configuration needs of the file system is checked once, by New,
// and is still configuration: exit status 2 naming the variable, before any
// listener (the API address here is taken, which alone would be status 1).
func TestFileSystemConfigExits2BeforeListening(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, c := range []struct{ name, value string }{
		{"PUBLISHER_AUTH_TOKEN_FILE", t.TempDir()}, // a directory
		{"PUBLISHER_SPOOL_DIR", "/proc/no-spool-here"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(binary)
			cmd.Env = append(os.Environ(), c.name+"="+c.value, "PUBLISHER_LISTEN_ADDR="+taken.Addr().String(),
				"PUBLISHER_ADMIN_ADDR="+freeAddr(t))
			cmd.WaitDelay = time.Second
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2; output:\n%s", err, out)
			}
			if !bytes.Contains(out, []byte("publisher: invalid configuration: "+c.name+": ")) {
				t.Fatalf("the message does not name %s:\n%s", c.name, out)
			}
		})
	}
}
