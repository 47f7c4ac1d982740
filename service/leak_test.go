package service

import (
	"testing"

	"go.uber.org/goleak"
)

// checkLeaks fails t when a goroutine started during it outlives it: called
// first, its check runs after every other cleanup of the test.
func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}
