package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/publisher-dev/publisher/publisher"
)

// TestClassifyTable lists every sentinel (and the wrapped forms the
// publisher returns) with its one row: the Kind, and what that Kind reads
// as everywhere (metrics' outcome, the span's error.type, the relay's
// permanence, whether the same request may succeed later).
func TestClassifyTable(t *testing.T) {
	checkLeaks(t)
	closed := fmt.Errorf("%w (message m): %w", publisher.ErrNotPublished, publisher.ErrClosed)
	foreignFull := &publisher.KindError{Kind: publisher.Full, Text: "x: full", Reason: "x full"}
	for _, tt := range []struct {
		err       error
		kind      publisher.Kind
		outcome   publisher.Outcome
		errorType string
		permanent bool
		temporary bool
	}{
		{nil, publisher.Confirmed, publisher.OutcomeConfirmed, "", false, false},
		{fmt.Errorf("%w (message m): %w", publisher.ErrNotPublished, publisher.ErrConfirmTimeout), publisher.NotSent, publisher.OutcomeTimeout, "timeout", false, true},
		{publisher.ErrNotPublished, publisher.NotSent, publisher.OutcomeTimeout, "timeout", false, true},
		{closed, publisher.Withdrawn, publisher.OutcomeFailed, "shutting_down", false, true},
		{publisher.ErrConfirmTimeout, publisher.TimedOut, publisher.OutcomeTimeout, "timeout", false, false},
		{context.DeadlineExceeded, publisher.TimedOut, publisher.OutcomeTimeout, "timeout", false, false},
		{fmt.Errorf("%w (message m; it may still reach the broker): %w", publisher.ErrConfirmTimeout, publisher.ErrClosed), publisher.Interrupted, publisher.OutcomeTimeout, "shutting_down", false, false},
		{fmt.Errorf("%w (3): %w", publisher.ErrTooManyAttempts, errors.New("EOF")), publisher.TooManyAttempts, publisher.OutcomeFailed, "too_many_attempts", false, false},
		{publisher.ErrExchangeNotFound, publisher.NotFound, publisher.OutcomeRejected, "not_found", true, false},
		{&publisher.ChannelError{Code: 404, Reason: "NOT_FOUND"}, publisher.NotFound, publisher.OutcomeRejected, "not_found", true, false},
		{publisher.ErrUnroutable, publisher.Unroutable, publisher.OutcomeReturned, "unroutable", true, false},
		{&publisher.ReturnError{Code: 312, Text: "NO_ROUTE"}, publisher.Unroutable, publisher.OutcomeReturned, "unroutable", true, false},
		{publisher.ErrNacked, publisher.Nacked, publisher.OutcomeNacked, "nacked", true, false},
		{publisher.ErrAccessRefused, publisher.AccessRefused, publisher.OutcomeRejected, "access_refused", true, false},
		{&publisher.ChannelError{Code: 403, Reason: "ACCESS_REFUSED"}, publisher.AccessRefused, publisher.OutcomeRejected, "access_refused", true, false},
		{publisher.ErrRejected, publisher.Rejected, publisher.OutcomeRejected, "rejected", true, false},
		{&publisher.ChannelError{Code: 406, Reason: "PRECONDITION_FAILED"}, publisher.Rejected, publisher.OutcomeRejected, "rejected", true, false},
		{publisher.ErrInvalidMessage, publisher.Invalid, publisher.OutcomeRejected, "invalid", true, false},
		{publisher.ErrBufferFull, publisher.Full, publisher.OutcomeFailed, "full", false, true},
		{foreignFull, publisher.Full, publisher.OutcomeFailed, "full", false, true},
		{fmt.Errorf("relay: %w: disk", &publisher.KindError{Kind: publisher.Unavailable, Text: "x"}), publisher.Unavailable, publisher.OutcomeFailed, "unavailable", false, true},
		{publisher.ErrClosed, publisher.Closed, publisher.OutcomeFailed, "shutting_down", false, true},
		{context.Canceled, publisher.Canceled, publisher.OutcomeFailed, "canceled", false, true},
		{errors.New("something else"), publisher.Unknown, publisher.OutcomeFailed, "_OTHER", false, true},
	} {
		k := publisher.Classify(tt.err)
		if k != tt.kind || k.Outcome() != tt.outcome || k.ErrorType() != tt.errorType || k.Permanent() != tt.permanent || k.Temporary() != tt.temporary {
			t.Errorf("%v: %v (%q) outcome %q, error.type %q, permanent %v, temporary %v; want %v outcome %q, error.type %q, permanent %v, temporary %v",
				tt.err, k, k.String(), k.Outcome(), k.ErrorType(), k.Permanent(), k.Temporary(),
				tt.kind, tt.outcome, tt.errorType, tt.permanent, tt.temporary)
		}
	}
}

// Every Kind up to Unknown has a row: an outcome, and a name unless it is
// Confirmed.
func TestEveryKindHasARow(t *testing.T) {
	checkLeaks(t)
	for k := publisher.Confirmed; k <= publisher.Unknown; k++ {
		if k.Outcome() == "" || (k != publisher.Confirmed && k.ErrorType() == "") {
			t.Errorf("Kind %d has no row", k)
		}
	}
	if publisher.Kind(200).ErrorType() != "_OTHER" {
		t.Error("a Kind beyond the table does not read as Unknown")
	}
}

func TestReason(t *testing.T) {
	checkLeaks(t)
	for err, want := range map[error]string{
		publisher.ErrBufferFull: "buffer full",
		publisher.ErrClosed:     "shutting down",
		&publisher.KindError{Kind: publisher.Full, Text: "relay: spool full", Reason: "spool full"}: "spool full",
	} {
		if got := publisher.Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}
