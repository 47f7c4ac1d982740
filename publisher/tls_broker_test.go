package publisher_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/publisher"
)

// publishTo publishes one message to queue through the default exchange and
// fails the test unless the broker confirms it.
func publishTo(t *testing.T, pub *publisher.Publisher, queue string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Publish(ctx, msg(queue)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

// Against a real RabbitMQ node with a TLS listener that requires client
// certificates (mutual TLS), its CA and certificates made here: PLAIN and
// EXTERNAL logins publish; each way a handshake or login fails says why, in
// the broker's own alerts (Erlang's TLS, not Go's); a client certificate
// and a password replaced on disk are used from the next connection on,
// without a new Publisher.
func TestTLSBroker(t *testing.T) {
	checkLeaks(t)
	n := brokertest.Start(t, brokertest.Options{TLS: &brokertest.TLSOptions{RequireClientCert: true, External: true}})
	for _, u := range []string{"app", "app2"} {
		if err := n.AddUser(u, "pw-"+u); err != nil {
			t.Fatal(err)
		}
	}
	queue := brokertest.TempQueue(t, n.URL(), "tls")
	dir := t.TempDir()
	ca := n.TLS.CA
	issue := func(name string, o brokertest.CertOptions) publisher.TLSFiles {
		c, k := ca.Issue(t, o)
		return publisher.TLSFiles{
			CAFile:   n.TLS.CAFile,
			CertFile: brokertest.WriteFile(t, dir, name+".pem", c),
			KeyFile:  brokertest.WriteFile(t, dir, name+".key", k),
		}
	}
	app := issue("app", brokertest.CertOptions{CommonName: "app"})
	plainURL := "amqps://app:pw-app@" + n.TLS.Addr() + "/"
	externalURL := "amqps://" + n.TLS.Addr() + "/"

	t.Run("PLAIN", func(t *testing.T) {
		tr := startTree(t, publisher.Config{URLs: []string{plainURL}, TLS: app}, treeOpts{})
		publishTo(t, tr.pub, queue)
		poll.Until(t, "one connection, of app over PLAIN", func() bool { return slices.Equal(n.ClientUsers(t), []string{"app PLAIN"}) })
	})

	t.Run("EXTERNAL", func(t *testing.T) {
		tr := startTree(t, publisher.Config{URLs: []string{externalURL}, TLS: app, AuthMechanism: publisher.AuthExternal}, treeOpts{})
		publishTo(t, tr.pub, queue)
		poll.Until(t, "one connection, of app over EXTERNAL", func() bool { return slices.Equal(n.ClientUsers(t), []string{"app EXTERNAL"}) })
	})

	t.Run("Refused", func(t *testing.T) {
		other := brokertest.NewCA(t, "other CA")
		oc, ok := other.Issue(t, brokertest.CertOptions{CommonName: "app"})
		foreign := publisher.TLSFiles{CAFile: n.TLS.CAFile, CertFile: brokertest.WriteFile(t, dir, "foreign.pem", oc), KeyFile: brokertest.WriteFile(t, dir, "foreign.key", ok)}
		expired := issue("expired", brokertest.CertOptions{CommonName: "app", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
		stranger := issue("stranger", brokertest.CertOptions{CommonName: "stranger"})
		for _, tt := range []struct {
			name string
			cfg  publisher.Config
			want string
		}{
			{"without the CA", publisher.Config{URLs: []string{plainURL}, TLS: publisher.TLSFiles{CertFile: app.CertFile, KeyFile: app.KeyFile}},
				"TLS: the broker's certificate (CN=localhost,O=brokertest, issued by CN=brokertest CA " + n.Name + ",O=brokertest) is signed by an unknown authority (its chain ends at CN=brokertest CA " + n.Name + ",O=brokertest): not by one of the system's root CAs"},
			{"another server name", publisher.Config{URLs: []string{plainURL}, TLS: publisher.TLSFiles{CAFile: n.TLS.CAFile, CertFile: app.CertFile, KeyFile: app.KeyFile, ServerName: "rabbit.example"}},
				`TLS: the broker's certificate is not valid for the name "rabbit.example": it is for DNS:localhost, IP:127.0.0.1`},
			{"no client certificate", publisher.Config{URLs: []string{plainURL}, TLS: publisher.TLSFiles{CAFile: n.TLS.CAFile}},
				"requires a client certificate and none is configured: set PUBLISHER_AMQP_TLS_CERT_FILE and PUBLISHER_AMQP_TLS_KEY_FILE"},
			{"an expired client certificate", publisher.Config{URLs: []string{externalURL}, TLS: expired, AuthMechanism: publisher.AuthExternal},
				"refused the client certificate (CN=app,O=brokertest, issued by CN=brokertest CA " + n.Name + ",O=brokertest) of " + expired.CertFile + " (the broker accepts certificates issued by CN=brokertest CA " + n.Name + ",O=brokertest)"},
			{"a client certificate of another CA", publisher.Config{URLs: []string{externalURL}, TLS: foreign, AuthMechanism: publisher.AuthExternal},
				"refused the client certificate (CN=app,O=brokertest, issued by CN=other CA,O=brokertest) of " + foreign.CertFile},
			{"EXTERNAL for no user of the broker", publisher.Config{URLs: []string{externalURL}, TLS: stranger, AuthMechanism: publisher.AuthExternal},
				`the broker refused the EXTERNAL login of the client certificate (CN=stranger,O=brokertest): the broker has no user "stranger"`},
			{"a wrong password", publisher.Config{URLs: []string{"amqps://app:wrong-s3cret@" + n.TLS.Addr() + "/"}, TLS: app},
				`the broker refused the login of user "app": wrong user name or password`},
		} {
			t.Run(tt.name, func(t *testing.T) {
				err := serveOnce(t, tt.cfg)
				t.Logf("%v", err)
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("Serve = %v\nwant it to say %q", err, tt.want)
				}
				if tt.cfg.TLS == expired && !strings.Contains(err.Error(), "the certificate expired at ") {
					t.Errorf("Serve = %v\nwant it to say when the certificate expired", err)
				}
				for _, secret := range []string{"pw-app", "s3cret"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("the error shows a password: %v", err)
					}
				}
			})
		}
	})

	// The certificate files are replaced (another identity, app2) while a
	// connection is up: the open connection keeps the old one; the broker
	// closes it, and the next incarnation presents the new one.
	t.Run("CertificateRotated", func(t *testing.T) {
		files := issue("rotating", brokertest.CertOptions{CommonName: "app"})
		tr := startTree(t, publisher.Config{URLs: []string{externalURL}, TLS: files, AuthMechanism: publisher.AuthExternal}, treeOpts{})
		publishTo(t, tr.pub, queue)
		poll.Until(t, "app connected", func() bool { return slices.Equal(n.ClientUsers(t), []string{"app EXTERNAL"}) })
		before, err := files.ClientCertExpiry()
		if err != nil {
			t.Fatal(err)
		}

		notAfter := time.Now().Add(72 * time.Hour).Truncate(time.Second)
		c, k := ca.Issue(t, brokertest.CertOptions{CommonName: "app2", NotAfter: notAfter})
		brokertest.ReplaceFile(t, files.KeyFile, k)
		brokertest.ReplaceFile(t, files.CertFile, c)
		if after, err := files.ClientCertExpiry(); err != nil || !after.Equal(notAfter) || after.Equal(before) {
			t.Fatalf("ClientCertExpiry after the rotation = %v, %v; want %v", after, err, notAfter)
		}
		publishTo(t, tr.pub, queue)
		if got := n.ClientUsers(t); !slices.Equal(got, []string{"app EXTERNAL"}) {
			t.Fatalf("connections before the connection loss = %q, want the old identity still", got)
		}
		connects := tr.pub.State().Connects
		if err := n.CloseAllConnections("certificate rotated"); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, "a new connection", func() bool { return tr.pub.State().Connects > connects && tr.pub.Ready() })
		publishTo(t, tr.pub, queue)
		poll.Until(t, "one connection, of app2 (the rotated certificate)", func() bool {
			return slices.Equal(n.ClientUsers(t), []string{"app2 EXTERNAL"})
		})
	})

	// The broker URLs file holds the password: changed on the broker and in
	// the file, it is used from the next connection on.
	t.Run("PasswordRotated", func(t *testing.T) {
		urls := filepath.Join(dir, "amqp-urls")
		brokertest.ReplaceFile(t, urls, []byte("amqps://app2:pw-app2@"+n.TLS.Addr()+"/\n"))
		tr := startTree(t, publisher.Config{URLsFile: urls, TLS: app}, treeOpts{})
		publishTo(t, tr.pub, queue)
		if err := n.ChangePassword("app2", "pw-new"); err != nil {
			t.Fatal(err)
		}
		brokertest.ReplaceFile(t, urls, []byte("amqps://app2:pw-new@"+n.TLS.Addr()+"/\n"))
		connects := tr.pub.State().Connects
		if err := n.CloseAllConnections("password rotated"); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, "a new connection", func() bool { return tr.pub.State().Connects > connects && tr.pub.Ready() })
		publishTo(t, tr.pub, queue)
		if s := tr.pub.State().URL; strings.Contains(s, "pw-") {
			t.Errorf("State().URL shows the password: %s", s)
		}
		poll.Until(t, "one connection, of app2 over PLAIN", func() bool { return slices.Equal(n.ClientUsers(t), []string{"app2 PLAIN"}) })
	})
	if got := brokertest.Drain(t, n.URL(), queue); len(got) != 7 {
		t.Errorf("the queue holds %d messages, want the 7 confirmed", len(got))
	}
}
