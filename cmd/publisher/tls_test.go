package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/internal/poll"
)

// tlsPassword is the broker password of these tests: it must never show in
// the service's output or answers.
const tlsPassword = "tls-s3cret-pw"

// noSecret fails t when the service's logs or text hold the password.
func noSecret(t *testing.T, what, text string) {
	t.Helper()
	if strings.Contains(text, tlsPassword) {
		t.Errorf("%s shows the broker password:\n%s", what, text)
	}
}

// waitLog waits until the service's output holds want.
func (p *proc) waitLog(want string) {
	p.t.Helper()
	poll.Within(p.t, waitLimit, "the log line "+want, func() bool { return strings.Contains(p.Logs(), want) })
}

// The real binary against a private RabbitMQ node with a TLS listener whose
// CA this test made: with PUBLISHER_AMQP_TLS_CA_FILE it is ready and its
// publishes are confirmed; without it (the system's roots) it is not ready,
// its log says why in words, and neither the log nor /readyz shows the
// password.
func TestTLSBrokerWithPrivateCA(t *testing.T) {
	t.Parallel()
	n := brokertest.Start(t, brokertest.Options{TLS: &brokertest.TLSOptions{}})
	if err := n.AddUser("pub", tlsPassword); err != nil {
		t.Fatal(err)
	}
	q := brokertest.TempQueue(t, n.URL(), "tls-ca")
	url := "amqps://pub:" + tlsPassword + "@" + n.TLS.Addr() + "/"

	p := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": url, "PUBLISHER_AMQP_TLS_CA_FILE": n.TLS.CAFile})
	p.waitReady()
	if r, err := p.publish("amq.default", q, []byte("over TLS"), nil); err != nil || r.code != 200 || r.status != "confirmed" {
		t.Fatalf("publish over TLS: %+v %v, want 200 confirmed", r, err)
	}
	if got := n.ClientUsers(t); !slices.Equal(got, []string{"pub PLAIN"}) {
		t.Errorf("the broker's connections: %q, want pub's", got)
	}
	noSecret(t, "the log", p.Logs())

	without := startService(t, map[string]string{"PUBLISHER_AMQP_URLS": url, "PUBLISHER_CONFIRM_TIMEOUT": "2s"})
	without.waitLog("not by one of the system's root CAs (set PUBLISHER_AMQP_TLS_CA_FILE")
	code, body := without.mustGet("/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz without the CA = %d %s, want 503", code, body)
	}
	noSecret(t, "/readyz", body)
	// Taken into the buffer while the supervision tree retries, then
	// answered "not published" (504, or 503 once the tree gave up).
	if r, err := without.publish("amq.default", q, []byte("refused"), nil); err != nil || r.code < 503 || !strings.Contains(r.errText, "not published") {
		t.Errorf("publish without the CA: %+v %v, want 503 or 504, not published", r, err)
	}
	noSecret(t, "the log", without.Logs())
	t.Logf("without the CA, the log says:\n%s", lineWith(without.Logs(), "unknown authority"))

	// EXTERNAL against a broker without the rabbitmq_auth_mechanism_ssl
	// plugin: not ready, and the log says what the broker lacks.
	dir := t.TempDir()
	c, k := n.TLS.CA.Issue(t, brokertest.CertOptions{CommonName: "pub"})
	external := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":           "amqps://" + n.TLS.Addr() + "/",
		"PUBLISHER_AMQP_AUTH_MECHANISM": "EXTERNAL",
		"PUBLISHER_AMQP_TLS_CA_FILE":    n.TLS.CAFile,
		"PUBLISHER_AMQP_TLS_CERT_FILE":  brokertest.WriteFile(t, dir, "pub.pem", c),
		"PUBLISHER_AMQP_TLS_KEY_FILE":   brokertest.WriteFile(t, dir, "pub.key", k),
	})
	external.waitLog("the broker does not offer the EXTERNAL mechanism: enable its rabbitmq_auth_mechanism_ssl plugin")
	if code, body := external.mustGet("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with EXTERNAL not offered = %d %s, want 503", code, body)
	}
}

// lineWith is the first line of logs holding s.
func lineWith(logs, s string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// Mutual TLS with EXTERNAL against a node that requires client
// certificates: the binary, its URL from PUBLISHER_AMQP_URLS_FILE without a
// user or password, logs in as its certificate's common name and publishes;
// the certificate's expiry is a metric; a certificate rotated on disk (to
// another identity) is used after the next connection loss, by the same
// process. A service without a client certificate is not ready and says
// why.
func TestTLSMutualExternal(t *testing.T) {
	t.Parallel()
	n := brokertest.Start(t, brokertest.Options{TLS: &brokertest.TLSOptions{RequireClientCert: true, External: true}})
	for _, u := range []string{"app", "app-renewed"} {
		if err := n.AddUser(u, tlsPassword); err != nil {
			t.Fatal(err)
		}
	}
	q := brokertest.TempQueue(t, n.URL(), "tls-mutual")
	dir := t.TempDir()
	notAfter := time.Now().Add(20 * 24 * time.Hour).Truncate(time.Second)
	c, k := n.TLS.CA.Issue(t, brokertest.CertOptions{CommonName: "app", NotAfter: notAfter})
	cert, key := brokertest.WriteFile(t, dir, "tls.crt", c), brokertest.WriteFile(t, dir, "tls.key", k)
	urls := brokertest.WriteFile(t, dir, "amqp-urls", []byte("amqps://"+n.TLS.Addr()+"/\n"))
	env := map[string]string{
		"PUBLISHER_AMQP_URLS_FILE":      urls,
		"PUBLISHER_AMQP_AUTH_MECHANISM": "EXTERNAL",
		"PUBLISHER_AMQP_TLS_CA_FILE":    n.TLS.CAFile,
		"PUBLISHER_AMQP_TLS_CERT_FILE":  cert,
		"PUBLISHER_AMQP_TLS_KEY_FILE":   key,
	}
	p := startService(t, env)
	p.waitReady()
	if r, err := p.publish("amq.default", q, []byte("mutual"), nil); err != nil || r.code != 200 {
		t.Fatalf("publish with EXTERNAL: %+v %v, want 200", r, err)
	}
	if got := n.ClientUsers(t); !slices.Equal(got, []string{"app EXTERNAL"}) {
		t.Errorf("the broker's connections: %q, want app over EXTERNAL", got)
	}
	if got := p.metric("publisher_tls_client_cert_expiry_timestamp_seconds"); got != float64(notAfter.Unix()) {
		t.Errorf("publisher_tls_client_cert_expiry_timestamp_seconds = %v, want %d", got, notAfter.Unix())
	}

	c, k = n.TLS.CA.Issue(t, brokertest.CertOptions{CommonName: "app-renewed"})
	brokertest.ReplaceFile(t, key, k)
	brokertest.ReplaceFile(t, cert, c)
	pid := p.Pid()
	if err := n.CloseAllConnections("certificate rotated"); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, waitLimit, "a connection with the rotated certificate", func() bool {
		return slices.Equal(n.ClientUsers(t), []string{"app-renewed EXTERNAL"})
	})
	p.waitReady()
	if r, err := p.publish("amq.default", q, []byte("rotated"), nil); err != nil || r.code != 200 {
		t.Fatalf("publish after the rotation: %+v %v, want 200", r, err)
	}
	if !p.Running() || p.Pid() != pid {
		t.Errorf("the process was restarted")
	}

	delete(env, "PUBLISHER_AMQP_TLS_CERT_FILE")
	delete(env, "PUBLISHER_AMQP_TLS_KEY_FILE")
	env["PUBLISHER_AMQP_AUTH_MECHANISM"] = "PLAIN"
	env["PUBLISHER_AMQP_URLS_FILE"] = brokertest.WriteFile(t, dir, "plain-urls", []byte("amqps://app:"+tlsPassword+"@"+n.TLS.Addr()+"/"))
	without := startService(t, env)
	without.waitLog("requires a client certificate and none is configured")
	if code, body := without.mustGet("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz without a client certificate = %d %s, want 503", code, body)
	}
	noSecret(t, "the log", without.Logs())
	noSecret(t, "the log", p.Logs())
	t.Logf("without a client certificate, the log says:\n%s", lineWith(without.Logs(), "client certificate"))
}

// The publish API over HTTPS with a real Go client (PUBLISHER_TLS_CERT_FILE
// and PUBLISHER_TLS_KEY_FILE), client certificates required
// (PUBLISHER_TLS_CLIENT_CA_FILE); the admin listener stays plain HTTP.
func TestHTTPSPublishAPI(t *testing.T) {
	t.Parallel()
	amqpURL := brokertest.SharedURL(t)
	q := brokertest.TempQueue(t, amqpURL, "https-api")
	dir := t.TempDir()
	ca := brokertest.NewCA(t, "publish API CA")
	caFile := brokertest.WriteFile(t, dir, "ca.pem", ca.CertPEM)
	sc, sk := ca.Issue(t, brokertest.CertOptions{CommonName: "publisher", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	p := startService(t, map[string]string{
		"PUBLISHER_AMQP_URLS":          amqpURL,
		"PUBLISHER_TLS_CERT_FILE":      brokertest.WriteFile(t, dir, "server.pem", sc),
		"PUBLISHER_TLS_KEY_FILE":       brokertest.WriteFile(t, dir, "server.key", sk),
		"PUBLISHER_TLS_CLIENT_CA_FILE": caFile,
	})
	p.waitReady() // over the plain admin listener

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cc, ck := ca.Issue(t, brokertest.CertOptions{CommonName: "orders"})
	pair, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	post := func(certs []tls.Certificate) (*http.Response, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		resp, err := c.Post("https://"+p.APIAddr()+"/v1/publish/amq.default/"+q, "text/plain", strings.NewReader("over HTTPS"))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := post([]tls.Certificate{pair})
	if err != nil || resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("HTTPS publish with a client certificate: %v %v, want 200 over TLS", resp, err)
	}
	t.Logf("HTTPS: %s, TLS version %x", resp.Proto, resp.TLS.Version)
	if _, err := post(nil); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("HTTPS publish without a client certificate: %v, want the handshake refused", err)
	}
	if got := brokertest.Drain(t, amqpURL, q); len(got) != 1 {
		t.Errorf("the queue holds %v, want the one message published over HTTPS", got)
	}
}

// A TLS file that cannot be read or parsed at start stops the binary with
// status 2 and a message naming the variable, quoting no key.
func TestTLSFileErrorsExit2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := brokertest.NewCA(t, "CA")
	c, k := ca.Issue(t, brokertest.CertOptions{CommonName: "app"})
	cert, key := brokertest.WriteFile(t, dir, "c.pem", c), brokertest.WriteFile(t, dir, "k.pem", k)
	keyBody := strings.Split(string(k), "\n")[1]
	for _, tc := range []struct {
		env  []string
		name string
	}{
		{[]string{"PUBLISHER_AMQP_URLS=amqps://h/", "PUBLISHER_AMQP_TLS_CA_FILE=" + filepath.Join(dir, "none.pem")}, "PUBLISHER_AMQP_TLS_CA_FILE"},
		{[]string{"PUBLISHER_AMQP_URLS=amqps://h/", "PUBLISHER_AMQP_TLS_CERT_FILE=" + key, "PUBLISHER_AMQP_TLS_KEY_FILE=" + key}, "PUBLISHER_AMQP_TLS_CERT_FILE"},
		{[]string{"PUBLISHER_AMQP_URLS=amqps://h/", "PUBLISHER_AMQP_TLS_CERT_FILE=" + cert, "PUBLISHER_AMQP_TLS_KEY_FILE=" + brokertest.WriteFile(t, dir, "not-a-key.pem", c)}, "PUBLISHER_AMQP_TLS_KEY_FILE"},
		{[]string{"PUBLISHER_AMQP_URLS_FILE=" + filepath.Join(dir, "none")}, "PUBLISHER_AMQP_URLS_FILE"},
		{[]string{"PUBLISHER_AMQP_AUTH_MECHANISM=EXTERNAL"}, "PUBLISHER_AMQP_AUTH_MECHANISM"},
		{[]string{"PUBLISHER_TLS_CERT_FILE=" + cert, "PUBLISHER_TLS_KEY_FILE=" + filepath.Join(dir, "none")}, "PUBLISHER_TLS_KEY_FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2; output:\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.name+": ") || strings.Contains(string(out), keyBody) {
				t.Fatalf("the message does not name %s, or quotes the key:\n%s", tc.name, out)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		})
	}
}
