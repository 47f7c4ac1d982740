package brokertest_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/internal/brokertest"
)

// A node with a TLS listener requiring client certificates: its CA verifies
// the node; a client certificate the CA issued logs in with EXTERNAL as the
// user of its common name; without one the handshake is refused. The node's
// key is readable by user rabbitmq alone.
func TestTLSNode(t *testing.T) {
	t.Parallel()
	n := brokertest.Start(t, brokertest.Options{TLS: &brokertest.TLSOptions{RequireClientCert: true, External: true}})
	if err := n.AddUser("tls-user", "unused"); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(n.TLS.CA.Cert)
	certPEM, keyPEM := n.TLS.CA.Issue(t, brokertest.CertOptions{CommonName: "tls-user"})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(cfg *tls.Config) (*amqp.Connection, error) {
		return amqp.DialConfig("amqps://"+n.TLS.Addr()+"/", amqp.Config{
			TLSClientConfig: cfg,
			SASL:            []amqp.Authentication{&amqp.ExternalAuth{}},
			Dial:            amqp.DefaultDial(10 * time.Second),
		})
	}
	c, err := dial(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("EXTERNAL with the CA's client certificate: %v", err)
	}
	c.Close()
	// Refused by the broker's "certificate required" alert, or, when the
	// connection was reset or closed before the client read it (TLS 1.3:
	// the client's handshake ends before the server checks its
	// certificate, so amqp091 may see only the close: ErrClosed), by that.
	if c, err := dial(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}); err == nil {
		c.Close()
		t.Fatal("a client without a certificate was let in")
	} else if !strings.Contains(err.Error(), "certificate required") && !strings.Contains(err.Error(), "reset") &&
		!errors.Is(err, amqp.ErrClosed) {
		t.Fatalf("without a client certificate: %v, want the broker's \"certificate required\"", err)
	}

	key := filepath.Join(n.Dir, "tls", "server.key")
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", key, fi.Mode().Perm())
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("rabbitmq")
		if err != nil {
			t.Fatal(err)
		}
		if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != u.Uid {
			t.Errorf("%s belongs to uid %s, want rabbitmq's %s", key, uid, u.Uid)
		}
	}
}
