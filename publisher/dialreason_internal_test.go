package publisher

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// In TLS 1.3 a broker refuses a client certificate after the client's side
// of the handshake: the dial may fail with any of the ways a connection
// closed under amqp091-go is reported, the alert lost. Each is explained as
// the refusal (CI saw "use of closed network connection" once in a few
// runs of TestTLSBroker), and none when the handshake did not get that far
// or the broker did not ask for a certificate.
func TestDialReasonClosedAfterTheHandshake(t *testing.T) {
	expired := &x509.Certificate{NotAfter: time.Now().Add(-24 * time.Hour)}
	expired.Subject.CommonName = "app"
	closes := []error{
		&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)},
		io.EOF,
		fmt.Errorf("read: %w", io.ErrUnexpectedEOF),
		amqp.ErrClosed,
		&net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed},
		&amqp.Error{Code: amqp.FrameError, Reason: "read tcp 127.0.0.1:1->127.0.0.1:2: use of closed network connection"},
		&amqp.Error{Code: amqp.FrameError, Reason: "read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer"},
	}
	uri := amqp.URI{Scheme: "amqps", Host: "127.0.0.1", Port: 5671}
	for _, err := range closes {
		notes := &handshakeNotes{certFile: "/etc/app.pem", cert: expired, asked: true, handshook: true}
		why := dialReason(err, uri, AuthExternal, notes)
		if !strings.Contains(why, "most likely refused the client certificate") || !strings.Contains(why, "expired at") {
			t.Errorf("%v: %q, want the refused, expired client certificate", err, why)
		}
		without := &handshakeNotes{asked: true, handshook: true}
		if why := dialReason(err, uri, AuthPlain, without); !strings.Contains(why, "requires a client certificate and none is configured") {
			t.Errorf("%v without a certificate: %q", err, why)
		}
		for _, n := range []*handshakeNotes{
			{certFile: "/etc/app.pem", cert: expired, asked: true},     // the handshake did not end
			{certFile: "/etc/app.pem", cert: expired, handshook: true}, // no certificate asked for
		} {
			if why := dialReason(err, uri, AuthExternal, n); strings.Contains(why, "refused") || strings.Contains(why, "requires") {
				t.Errorf("%v with %+v: %q, want no claim about the certificate", err, *n, why)
			}
		}
	}
	if closedByPeer(errors.New("something else")) {
		t.Error("any error is taken for a close")
	}
}
