package service

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/fakeamqp"
	"github.com/publisher-dev/publisher/internal/poll"
	"github.com/publisher-dev/publisher/internal/promtext"
	"github.com/publisher-dev/publisher/internal/syncbuf"
)

// Validate's checks of the TLS settings: pairs set together, EXTERNAL with a
// client certificate and TLS URLs, a server name that is a name, client
// certificates only over HTTPS; the broker URLs file leaves PUBLISHER_AMQP_URLS
// unchecked (it is not used).
func TestValidateTLSSettings(t *testing.T) {
	checkLeaks(t)
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"CA and amqps", func(c *Config) { c.AMQPURLs = []string{"amqps://u:p@b/"}; c.AMQPTLSCAFile = "/ca.pem" }, ""},
		{"CA and amqp", func(c *Config) { c.AMQPTLSCAFile = "/ca.pem" },
			"PUBLISHER_AMQP_URLS: amqp://guest:xxxxx@localhost:5672/: PUBLISHER_AMQP_TLS_* is set but the URL is not TLS: use amqps://"},
		{"certificate alone", func(c *Config) { c.AMQPURLs = []string{"amqps://u:p@b/"}; c.AMQPTLSCertFile = "/c.pem" },
			"PUBLISHER_AMQP_TLS_CERT_FILE: set without PUBLISHER_AMQP_TLS_KEY_FILE (set both, or neither)"},
		{"key alone", func(c *Config) { c.AMQPURLs = []string{"amqps://u:p@b/"}; c.AMQPTLSKeyFile = "/k.pem" },
			"PUBLISHER_AMQP_TLS_KEY_FILE: set without PUBLISHER_AMQP_TLS_CERT_FILE (set both, or neither)"},
		{"server name with a port", func(c *Config) { c.AMQPURLs = []string{"amqps://u:p@b/"}; c.AMQPTLSServerName = "rabbit:5671" },
			`PUBLISHER_AMQP_TLS_SERVER_NAME: "rabbit:5671" is not a host name`},
		{"server name, an address", func(c *Config) { c.AMQPURLs = []string{"amqps://u:p@b/"}; c.AMQPTLSServerName = "10.0.0.1" }, ""},
		{"EXTERNAL, lower case", func(c *Config) {
			c.AMQPURLs, c.AMQPAuthMechanism = []string{"amqps://b/"}, "external"
			c.AMQPTLSCertFile, c.AMQPTLSKeyFile = "/c.pem", "/k.pem"
		}, ""},
		{"EXTERNAL without a certificate", func(c *Config) { c.AMQPURLs, c.AMQPAuthMechanism = []string{"amqps://b/"}, "EXTERNAL" },
			"PUBLISHER_AMQP_AUTH_MECHANISM: EXTERNAL takes the identity from the client certificate: set PUBLISHER_AMQP_TLS_CERT_FILE and PUBLISHER_AMQP_TLS_KEY_FILE"},
		{"EXTERNAL with a password", func(c *Config) {
			c.AMQPURLs, c.AMQPAuthMechanism = []string{"amqps://u:s3cret@b/"}, "EXTERNAL"
			c.AMQPTLSCertFile, c.AMQPTLSKeyFile = "/c.pem", "/k.pem"
		}, "PUBLISHER_AMQP_URLS: amqps://u:xxxxx@b/: PUBLISHER_AMQP_AUTH_MECHANISM=EXTERNAL takes the identity from the client certificate: remove the user name and password"},
		{"another mechanism", func(c *Config) { c.AMQPAuthMechanism = "AMQPLAIN" }, `PUBLISHER_AMQP_AUTH_MECHANISM: "AMQPLAIN": want PLAIN or EXTERNAL`},
		{"URLs file", func(c *Config) { c.AMQPURLsFile = "/urls"; c.AMQPURLs = []string{"not a URL"} }, ""},
		{"HTTPS key alone", func(c *Config) { c.TLSKeyFile = "/k.pem" }, "PUBLISHER_TLS_KEY_FILE: set without PUBLISHER_TLS_CERT_FILE"},
		{"client CA without HTTPS", func(c *Config) { c.TLSClientCAFile = "/ca.pem" },
			"PUBLISHER_TLS_CLIENT_CA_FILE: client certificates need HTTPS: set PUBLISHER_TLS_CERT_FILE and PUBLISHER_TLS_KEY_FILE too"},
	} {
		c := (Config{}).withDefaults()
		tt.edit(&c)
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: Validate = %v, want %q", tt.name, err, tt.want)
		case err != nil && strings.Contains(err.Error(), "s3cret"):
			t.Errorf("%s: Validate quotes a password: %v", tt.name, err)
		}
	}
}

// tlsFiles are a CA and certificates made for a test, in its directory.
type tlsFiles struct {
	dir                 string
	ca                  *brokertest.CA
	caFile              string
	serverCert          string // for 127.0.0.1
	serverKey           string
	clientCert          string // CN=app
	clientKey           string
	clientNotAfter      time.Time
	otherCert, otherKey string // another pair, whose key matches neither of the above
}

func makeTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	f := &tlsFiles{dir: dir, ca: brokertest.NewCA(t, "service test CA")}
	f.caFile = brokertest.WriteFile(t, dir, "ca.pem", f.ca.CertPEM)
	c, k := f.ca.Issue(t, brokertest.CertOptions{CommonName: "publisher", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	f.serverCert, f.serverKey = brokertest.WriteFile(t, dir, "server.pem", c), brokertest.WriteFile(t, dir, "server.key", k)
	f.clientNotAfter = time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	c, k = f.ca.Issue(t, brokertest.CertOptions{CommonName: "app", NotAfter: f.clientNotAfter})
	f.clientCert, f.clientKey = brokertest.WriteFile(t, dir, "client.pem", c), brokertest.WriteFile(t, dir, "client.key", k)
	c, k = f.ca.Issue(t, brokertest.CertOptions{CommonName: "other"})
	f.otherCert, f.otherKey = brokertest.WriteFile(t, dir, "other.pem", c), brokertest.WriteFile(t, dir, "other.key", k)
	return f
}

// A TLS file that cannot be read or parsed at start is a configuration
// error naming its variable (the command's status 2); its content, a key,
// never shows.
func TestTLSFilesAreReadAtStart(t *testing.T) {
	checkLeaks(t)
	f := makeTLSFiles(t)
	garbage := brokertest.WriteFile(t, f.dir, "garbage", []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"))
	missing := filepath.Join(f.dir, "missing")
	urls := brokertest.WriteFile(t, f.dir, "urls", []byte("amqps://u:s3cret@broker:99999/\n"))
	amqps := func(c *Config) { c.AMQPURLs = []string{"amqps://u:p@127.0.0.1/"} }
	for _, tt := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { amqps(c); c.AMQPTLSCAFile = missing }, "PUBLISHER_AMQP_TLS_CA_FILE: " + missing + ": cannot read it: no such file or directory"},
		{func(c *Config) { amqps(c); c.AMQPTLSCAFile = garbage }, "PUBLISHER_AMQP_TLS_CA_FILE: " + garbage + ": holds no PEM certificate"},
		{func(c *Config) { amqps(c); c.AMQPTLSCertFile, c.AMQPTLSKeyFile = garbage, f.clientKey }, "PUBLISHER_AMQP_TLS_CERT_FILE: " + garbage + ": holds a private key but no certificate"},
		{func(c *Config) { amqps(c); c.AMQPTLSCertFile, c.AMQPTLSKeyFile = f.clientCert, garbage }, "PUBLISHER_AMQP_TLS_KEY_FILE: " + garbage + ": the PKCS #8 private key does not parse"},
		{func(c *Config) { amqps(c); c.AMQPTLSCertFile, c.AMQPTLSKeyFile = f.clientCert, f.otherKey }, "PUBLISHER_AMQP_TLS_KEY_FILE: " + f.otherKey + ": the private key does not match the certificate in " + f.clientCert},
		{func(c *Config) { c.AMQPURLsFile = missing }, "PUBLISHER_AMQP_URLS_FILE: " + missing + ": cannot read it"},
		{func(c *Config) { c.AMQPURLsFile = urls }, "PUBLISHER_AMQP_URLS_FILE: " + urls + ": amqps://u:xxxxx@broker:99999/: invalid port"},
		{func(c *Config) { c.TLSCertFile, c.TLSKeyFile = missing, f.serverKey }, "PUBLISHER_TLS_CERT_FILE: " + missing + ": cannot read it"},
		{func(c *Config) { c.TLSCertFile, c.TLSKeyFile = f.serverCert, f.clientKey }, "PUBLISHER_TLS_KEY_FILE: " + f.clientKey + ": the private key does not match"},
		{func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = f.serverCert, f.serverKey, garbage }, "PUBLISHER_TLS_CLIENT_CA_FILE: " + garbage + ": holds no PEM certificate"},
	} {
		cfg := testConfig()
		tt.edit(&cfg)
		_, err := newService(cfg, Options{Logger: discard()}, (&fakeamqp.Broker{}).Dial)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New = %v, want ErrConfig saying %q", err, tt.want)
		}
		if err != nil && (strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "s3cret")) {
			t.Errorf("New quotes a secret: %v", err)
		}
	}
}

// startLogged is start with the service's log written to the returned buffer.
func startLogged(t *testing.T, cfg Config) (*running, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	return startWith(t, cfg, &fakeamqp.Broker{}, slog.New(slog.NewTextHandler(logs, nil))), logs
}

// httpsClient trusts ca and presents cert (when given); each request opens a
// new connection, so it sees the certificate served now.
func httpsClient(t *testing.T, caFile string, cert *tls.Certificate) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// publishTLS publishes over HTTPS and returns the status, the protocol and
// the subject of the certificate the service presented.
func publishTLS(c *http.Client, addr string) (code int, proto, subject string, err error) {
	resp, err := c.Post("https://"+addr+"/v1/publish/amq.default/q", "text/plain", strings.NewReader("hello"))
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Proto, resp.TLS.PeerCertificates[0].Subject.CommonName, nil
}

// replace writes data to path as a Secret volume or a certificate manager
// does: a new file renamed over the old one.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// The publish API over HTTPS: HTTP/1.1 over TLS 1.2 or later, the plain
// admin listener beside it; a certificate replaced on disk is served from
// the next handshake on; a replacement that cannot be used (a certificate
// whose key was not written yet) keeps the one in use, logged once.
func TestHTTPSServesAndReloadsTheCertificate(t *testing.T) {
	checkLeaks(t)
	f := makeTLSFiles(t)
	cfg := testConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = f.serverCert, f.serverKey
	r, logs := startLogged(t, cfg)
	poll.Within(t, 10*time.Second, "ready", func() bool { c, _ := r.get("/readyz"); return c == 200 })
	client := httpsClient(t, f.caFile, nil)

	code, proto, subject, err := publishTLS(client, r.APIAddr())
	if err != nil || code != 200 || proto != "HTTP/1.1" || subject != "publisher" {
		t.Fatalf("HTTPS publish = %d %s %s %v, want 200 over HTTP/1.1 from the publisher's certificate", code, proto, subject, err)
	}
	if resp, err := http.Post("http://"+r.APIAddr()+"/v1/publish/amq.default/q", "text/plain", strings.NewReader("x")); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the HTTPS port: %s, want net/http's 400", resp.Status)
		}
	}
	old := tls.Config{RootCAs: client.Transport.(*http.Transport).TLSClientConfig.RootCAs, MaxVersion: tls.VersionTLS11}
	if c, err := tls.Dial("tcp", r.APIAddr(), &old); err == nil {
		c.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}

	// A new certificate, its key written after it: between the two writes
	// the pair does not match, and the old one is served.
	certPEM, keyPEM := f.ca.Issue(t, brokertest.CertOptions{CommonName: "publisher-renewed", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	replace(t, f.serverCert, certPEM)
	for range 2 {
		if _, _, subject, err := publishTLS(client, r.APIAddr()); err != nil || subject != "publisher" {
			t.Fatalf("with the key not written yet: served %q (%v), want the previous certificate", subject, err)
		}
	}
	if n := strings.Count(logs.String(), "the TLS certificate changed on disk and cannot be used"); n != 1 {
		t.Errorf("the unusable certificate was logged %d times, want once:\n%s", n, logs)
	}
	replace(t, f.serverKey, keyPEM)
	if code, _, subject, err := publishTLS(client, r.APIAddr()); err != nil || code != 200 || subject != "publisher-renewed" {
		t.Fatalf("after the rotation: %d, served %q (%v), want the renewed certificate", code, subject, err)
	}
	if !strings.Contains(logs.String(), "publish API: TLS certificate read again") {
		t.Errorf("the reload was not logged:\n%s", logs)
	}
	// The admin listener stays plain HTTP.
	if c, _ := r.get("/healthz"); c != 200 {
		t.Errorf("plain HTTP /healthz: %d", c)
	}
}

// With PUBLISHER_TLS_CLIENT_CA_FILE the publish API requires a client
// certificate that CA issued; the CA file too is read again when it changes.
func TestHTTPSRequiresClientCertificates(t *testing.T) {
	checkLeaks(t)
	f := makeTLSFiles(t)
	cfg := testConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile = f.serverCert, f.serverKey, f.caFile
	// The CA file is the one the server's certificate came from too; a copy,
	// so that replacing it leaves the clients' trust alone.
	clientCA := brokertest.WriteFile(t, f.dir, "client-ca.pem", f.ca.CertPEM)
	cfg.TLSClientCAFile = clientCA
	r, _ := startLogged(t, cfg)
	poll.Within(t, 10*time.Second, "ready", func() bool { c, _ := r.get("/readyz"); return c == 200 })

	if _, _, _, err := publishTLS(httpsClient(t, f.caFile, nil), r.APIAddr()); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("without a client certificate: %v, want the handshake refused (certificate required)", err)
	}
	pair, err := tls.LoadX509KeyPair(f.clientCert, f.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _, err := publishTLS(httpsClient(t, f.caFile, &pair), r.APIAddr()); err != nil || code != 200 {
		t.Fatalf("with a client certificate of the CA: %d %v, want 200", code, err)
	}
	other := brokertest.NewCA(t, "other clients")
	c, k := other.Issue(t, brokertest.CertOptions{CommonName: "app"})
	foreign, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := publishTLS(httpsClient(t, f.caFile, &foreign), r.APIAddr()); err == nil {
		t.Error("a client certificate of another CA was let in")
	}
	replace(t, clientCA, other.CertPEM)
	if code, _, _, err := publishTLS(httpsClient(t, f.caFile, &foreign), r.APIAddr()); err != nil || code != 200 {
		t.Fatalf("after the client CA file named the other CA: %d %v, want 200", code, err)
	}
}

// publisher_tls_client_cert_expiry_timestamp_seconds is the client
// certificate's notAfter, read from its file at each scrape: a renewed
// certificate shows at once. Without a client certificate there is none.
func TestClientCertExpiryMetric(t *testing.T) {
	checkLeaks(t)
	f := makeTLSFiles(t)
	cfg := testConfig()
	cfg.AMQPURLs = []string{"amqps://u:p@127.0.0.1/"} // the fake broker ignores TLS
	cfg.AMQPTLSCAFile, cfg.AMQPTLSCertFile, cfg.AMQPTLSKeyFile = f.caFile, f.clientCert, f.clientKey
	r, _ := startLogged(t, cfg)
	const name = "publisher_tls_client_cert_expiry_timestamp_seconds"
	scrape := func() promtext.Samples {
		resp, err := http.Get("http://" + r.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		s, err := promtext.Parse(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got, ok := scrape().Sum(name); !ok || got != float64(f.clientNotAfter.Unix()) {
		t.Fatalf("%s = %v (found %v), want %d", name, got, ok, f.clientNotAfter.Unix())
	}
	renewed := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	c, k := f.ca.Issue(t, brokertest.CertOptions{CommonName: "app", NotAfter: renewed})
	replace(t, f.clientKey, k)
	replace(t, f.clientCert, c)
	if got, ok := scrape().Sum(name); !ok || got != float64(renewed.Unix()) {
		t.Fatalf("after the renewal %s = %v (found %v), want %d", name, got, ok, renewed.Unix())
	}
	if err := os.Remove(f.clientCert); err != nil {
		t.Fatal(err)
	}
	if _, ok := scrape().Sum(name); ok {
		t.Errorf("%s has a sample while its file cannot be read", name)
	}

	plain, _ := startLogged(t, testConfig())
	resp, err := http.Get("http://" + plain.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); bytes.Contains(b, []byte(name)) {
		t.Errorf("%s is exposed without a client certificate", name)
	}
}
