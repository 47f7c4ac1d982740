package publisher_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/publisher-dev/publisher/internal/brokertest"
	"github.com/publisher-dev/publisher/publisher"
)

// keyMaterial is a piece of the base64 body of a PEM key, which no error may
// quote.
func keyMaterial(t *testing.T, keyPEM []byte) string {
	t.Helper()
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		t.Fatal("no PEM key")
	}
	enc := pem.EncodeToMemory(&pem.Block{Type: "X", Bytes: b.Bytes})
	lines := strings.Split(string(enc), "\n")
	return lines[1][10:40]
}

// LoadKeyPair says what is wrong with a client certificate or its key, in
// words of its own, naming the file at fault by its path (FileError.Path,
// which the service turns into the variable's name) and never quoting a
// key.
func TestLoadKeyPairSaysWhatIsWrong(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	ca := brokertest.NewCA(t, "test CA")
	certPEM, keyPEM := ca.Issue(t, brokertest.CertOptions{CommonName: "app"})
	_, otherKey := ca.Issue(t, brokertest.CertOptions{CommonName: "other"})
	write := func(name string, data []byte) string { return brokertest.WriteFile(t, dir, name, data) }
	cert, key := write("cert.pem", certPEM), write("key.pem", keyPEM)
	both := write("both.pem", append(slices.Clone(certPEM), keyPEM...))
	b, _ := pem.Decode(keyPEM)
	//lint:ignore SA1019 an encrypted PEM key as older tools write it is the input under test
	encBlock, err := x509.EncryptPEMBlock(strings.NewReader(strings.Repeat("r", 64)), "PRIVATE KEY", b.Bytes, []byte("pass"), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	encrypted := write("encrypted.pem", pem.EncodeToMemory(encBlock))
	pkcs8Enc := write("pkcs8enc.pem", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	garbage := write("garbage.pem", []byte("not a PEM file\n"))
	badKey := write("badkey.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nonsense")}))
	badCert := write("badcert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nonsense")}))
	other := write("other.pem", otherKey)
	missing := filepath.Join(dir, "missing.pem")

	if pair, err := publisher.LoadKeyPair(cert, key); err != nil || pair.Leaf == nil || pair.Leaf.Subject.CommonName != "app" {
		t.Fatalf("LoadKeyPair(good) = %v, %v", pair.Leaf, err)
	}
	if _, err := publisher.LoadKeyPair(both, both); err != nil {
		t.Fatalf("LoadKeyPair(one file holding both) = %v", err)
	}
	secrets := []string{keyMaterial(t, keyPEM), keyMaterial(t, otherKey), "nonsense"}
	for _, tt := range []struct {
		name, cert, key, path, want string
	}{
		{"missing certificate", missing, key, missing, "cannot read it: no such file or directory"},
		{"missing key", cert, missing, missing, "cannot read it: no such file or directory"},
		{"a directory", dir, key, dir, "cannot read it: is a directory"},
		{"swapped", key, cert, key, "holds a private key but no certificate (are the certificate and key files swapped?)"},
		{"not PEM", garbage, key, garbage, "holds no PEM certificate"},
		{"certificate does not parse", badCert, key, badCert, "certificate 1 of 1 does not parse"},
		{"key not PEM", cert, garbage, garbage, "holds no PEM private key"},
		{"key is a certificate", cert, cert, cert, "holds no private key, only CERTIFICATE blocks (are the certificate and key files swapped?)"},
		{"encrypted key", cert, encrypted, encrypted, "the private key is encrypted; the service takes no passphrase"},
		{"encrypted PKCS #8 key", cert, pkcs8Enc, pkcs8Enc, "the private key is encrypted"},
		{"key does not parse", cert, badKey, badKey, "the PKCS #8 private key does not parse"},
		{"another certificate's key", cert, other, other, "the private key does not match the certificate in " + cert},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := publisher.LoadKeyPair(tt.cert, tt.key)
			var fe *publisher.FileError
			if !errors.As(err, &fe) {
				t.Fatalf("LoadKeyPair = %v, want a *FileError", err)
			}
			if fe.Path != tt.path || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), tt.path+": ") {
				t.Fatalf("LoadKeyPair = %q (path %s), want %s: ...%s...", err, fe.Path, tt.path, tt.want)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("the error quotes the file's content %q: %v", s, err)
				}
			}
		})
	}
}

func TestLoadCAFile(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	a, b := brokertest.NewCA(t, "A"), brokertest.NewCA(t, "B")
	bundle := brokertest.WriteFile(t, dir, "bundle.pem", append(slices.Clone(a.CertPEM), b.CertPEM...))
	pool, err := publisher.LoadCAFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range []*brokertest.CA{a, b} {
		if _, err := ca.Cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
			t.Errorf("the pool does not hold %s: %v", ca.Cert.Subject, err)
		}
	}
	_, key := a.Issue(t, brokertest.CertOptions{CommonName: "x"})
	for _, tt := range []struct {
		data []byte
		want string
	}{
		{[]byte(""), "holds no PEM certificate (a CA bundle is one or more -----BEGIN CERTIFICATE----- blocks)"},
		{key, "holds no PEM certificate"},
		{append(slices.Clone(a.CertPEM), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30}})...), "certificate 2 of 2 does not parse"},
	} {
		path := brokertest.WriteFile(t, dir, "ca.pem", tt.data)
		_, err := publisher.LoadCAFile(path)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), keyMaterial(t, key)) {
			t.Errorf("LoadCAFile = %v, want %q", err, tt.want)
		}
	}
}

// CheckURL refuses what would make a connection quietly other than
// configured: TLS files or EXTERNAL with amqp://, user info with EXTERNAL,
// and the query parameters with which amqp091-go would read TLS files of
// its own. The password never shows.
func TestCheckURL(t *testing.T) {
	checkLeaks(t)
	plain := publisher.Config{}
	withCA := publisher.Config{TLS: publisher.TLSFiles{CAFile: "/ca.pem"}}
	external := publisher.Config{TLS: publisher.TLSFiles{CertFile: "/c.pem", KeyFile: "/k.pem"}, AuthMechanism: publisher.AuthExternal}
	for _, tt := range []struct {
		cfg  publisher.Config
		url  string
		want string // "" for none
	}{
		{plain, "amqp://user:s3cret@broker/", ""},
		{plain, "amqps://user:s3cret@broker/", ""},
		{withCA, "amqps://user:s3cret@broker:5671/", ""},
		{withCA, "amqp://user:s3cret@broker/", "amqp://user:xxxxx@broker/: PUBLISHER_AMQP_TLS_* is set but the URL is not TLS: use amqps://"},
		{external, "amqps://broker:5671/", ""},
		{external, "amqp://broker/", "PUBLISHER_AMQP_AUTH_MECHANISM=EXTERNAL needs TLS: use amqps://"},
		{external, "amqps://user:s3cret@broker/", "amqps://user:xxxxx@broker/: PUBLISHER_AMQP_AUTH_MECHANISM=EXTERNAL takes the identity from the client certificate: remove the user name and password"},
		{plain, "amqps://user:s3cret@broker/?cacertfile=/x.pem", "the URL's cacertfile parameter is not read; set PUBLISHER_AMQP_TLS_CA_FILE instead"},
		{plain, "amqps://user:s3cret@broker/?auth_mechanism=external", "set PUBLISHER_AMQP_AUTH_MECHANISM instead"},
		{plain, "amqp://user:s3cret@broker:0/", "invalid port"},
		{plain, "amqp://user:s3cr%zzet@broker/", "invalid percent-encoding"},
		{plain, "amqp://user:s3cret@broker/?heartbeat=5", ""},
	} {
		err := tt.cfg.CheckURL(tt.url)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckURL(%s) = %v, want nil", tt.url, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("CheckURL(%s) = %v, want %q", tt.url, err, tt.want)
		case err != nil && strings.Contains(err.Error(), "s3cr"):
			t.Errorf("CheckURL(%s) quotes the password: %v", tt.url, err)
		}
	}
}

func TestReadURLsFile(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	path := brokertest.WriteFile(t, dir, "urls", []byte("# the cluster\namqp://u:p@a:5672/, amqp://u:p@b:5672/\n\n  amqp://u:p@c:5672/  \n"))
	cfg := publisher.Config{URLsFile: path}
	urls, err := cfg.ReadURLsFile()
	if want := []string{"amqp://u:p@a:5672/", "amqp://u:p@b:5672/", "amqp://u:p@c:5672/"}; err != nil || !slices.Equal(urls, want) {
		t.Fatalf("ReadURLsFile = %q, %v, want %q", urls, err, want)
	}
	for _, tt := range []struct {
		data []byte
		want string
	}{
		{[]byte("# nothing\n\n , \n"), path + ": holds no broker URL"},
		{[]byte("amqp://u:p@a/\namqp://user:s3cr%zzet@b/\n"), path + ": amqp://user:xxxxx@b/: invalid percent-encoding"},
		{[]byte("amqp://user:s3cret@b:99999/"), "invalid port"},
	} {
		brokertest.WriteFile(t, dir, "urls", tt.data)
		_, err := cfg.ReadURLsFile()
		var fe *publisher.FileError
		if !errors.As(err, &fe) || fe.Path != path || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cr") {
			t.Errorf("ReadURLsFile = %v, want a FileError with %q and no password", err, tt.want)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.ReadURLsFile(); err == nil || !strings.Contains(err.Error(), path+": cannot read it: no such file or directory") {
		t.Errorf("ReadURLsFile of a missing file = %v", err)
	}
}

// tlsServer accepts TLS connections on loopback with cfg and runs the
// handshake of each (then, if it succeeds, answers the AMQP protocol header
// with nothing and closes); it stops with the test. With resetWithoutCert,
// a client that sent no certificate gets its connection reset right after
// the handshake, without an alert.
func tlsServer(t *testing.T, cfg *tls.Config) string { return tlsServerReset(t, cfg, false) }

func tlsServerReset(t *testing.T, cfg *tls.Config, resetWithoutCert bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err == nil && resetWithoutCert && len(tc.ConnectionState().PeerCertificates) == 0 {
					c.(*net.TCPConn).SetLinger(0)
					return
				} else if err == nil {
					// TLS 1.3: the client's certificate is checked here,
					// after the client's side of the handshake ended. A
					// client let in gets the protocol header back: "not
					// this version of AMQP".
					if _, err := io.ReadFull(tc, make([]byte, 8)); err == nil {
						tc.Write([]byte("AMQP\x00\x00\x09\x01"))
					}
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// serveOnce runs one incarnation of a publisher with cfg against url and
// returns its error (the dial's).
func serveOnce(t *testing.T, cfg publisher.Config) error {
	t.Helper()
	cfg.DialTimeout = 5 * time.Second
	p, err := publisher.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = p.Serve(ctx)
	if err == nil {
		t.Fatal("Serve = nil, want the dial's failure")
	}
	return err
}

// A failed TLS handshake says why, in words: the broker's certificate not
// signed by a trusted CA, not for the name dialled, expired; a client
// certificate required and none configured, or refused; a port that does not
// speak TLS. Against Go's TLS servers here; the real broker's alerts are
// checked in TestTLSBroker.
func TestHandshakeFailuresSayWhy(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	ca := brokertest.NewCA(t, "test CA")
	caFile := brokertest.WriteFile(t, dir, "ca.pem", ca.CertPEM)
	server := func(o brokertest.CertOptions) tls.Certificate {
		o.Server, o.IPs, o.DNSNames = true, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}
		c, k := ca.Issue(t, o)
		pair, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return pair
	}
	good := server(brokertest.CertOptions{CommonName: "broker"})
	expired := server(brokertest.CertOptions{CommonName: "broker", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	clientPEM, clientKey := ca.Issue(t, brokertest.CertOptions{CommonName: "app"})
	clientCert, clientKeyFile := brokertest.WriteFile(t, dir, "client.pem", clientPEM), brokertest.WriteFile(t, dir, "client.key", clientKey)
	other := brokertest.NewCA(t, "other CA")
	otherPEM, otherKey := other.Issue(t, brokertest.CertOptions{CommonName: "stranger"})
	otherCert, otherKeyFile := brokertest.WriteFile(t, dir, "other.pem", otherPEM), brokertest.WriteFile(t, dir, "other.key", otherKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)

	plainAddr := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{good}})
	expiredAddr := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{expired}})
	mutualAddr := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{good}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	resetAddr := tlsServerReset(t, &tls.Config{Certificates: []tls.Certificate{good}, ClientAuth: tls.RequestClientCert}, true)
	mutual12Addr := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{good}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MaxVersion: tls.VersionTLS12})
	notTLS, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := notTLS.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("AMQP\x00\x00\x09\x01")) // what a plain AMQP port answers to a TLS hello
			c.Close()
		}
	})
	defer func() { notTLS.Close(); wg.Wait() }()

	url := func(addr string) string { return "amqps://user:s3cret@" + addr + "/" }
	for _, tt := range []struct {
		name string
		cfg  publisher.Config
		want string
	}{
		{"system roots", publisher.Config{URLs: []string{url(plainAddr)}},
			`TLS: the broker's certificate (CN=broker,O=brokertest, issued by CN=test CA,O=brokertest) is signed by an unknown authority: not by one of the system's root CAs (set PUBLISHER_AMQP_TLS_CA_FILE`},
		{"another CA", publisher.Config{URLs: []string{url(plainAddr)}, TLS: publisher.TLSFiles{CAFile: brokertest.WriteFile(t, dir, "other-ca.pem", other.CertPEM)}},
			"is signed by an unknown authority: not by one of the CA file " + filepath.Join(dir, "other-ca.pem")},
		{"name mismatch", publisher.Config{URLs: []string{url(plainAddr)}, TLS: publisher.TLSFiles{CAFile: caFile, ServerName: "rabbit.example"}},
			`TLS: the broker's certificate is not valid for the name "rabbit.example": it is for DNS:localhost, IP:127.0.0.1; dial a name it carries, or set PUBLISHER_AMQP_TLS_SERVER_NAME to one`},
		{"expired", publisher.Config{URLs: []string{url(expiredAddr)}, TLS: publisher.TLSFiles{CAFile: caFile}},
			"TLS: the broker's certificate (CN=broker,O=brokertest, issued by CN=test CA,O=brokertest) has expired or is not valid yet: it expired at "},
		{"no client certificate", publisher.Config{URLs: []string{url(mutualAddr)}, TLS: publisher.TLSFiles{CAFile: caFile}},
			"requires a client certificate and none is configured: set PUBLISHER_AMQP_TLS_CERT_FILE and PUBLISHER_AMQP_TLS_KEY_FILE"},
		{"no client certificate, TLS 1.2", publisher.Config{URLs: []string{url(mutual12Addr)}, TLS: publisher.TLSFiles{CAFile: caFile}},
			"TLS: the broker requires a client certificate and none is configured"},
		{"no client certificate, reset without an alert", publisher.Config{URLs: []string{url(resetAddr)}, TLS: publisher.TLSFiles{CAFile: caFile}},
			"TLS: the broker most likely requires a client certificate and none is configured: set PUBLISHER_AMQP_TLS_CERT_FILE and PUBLISHER_AMQP_TLS_KEY_FILE (it closed the connection right after a handshake in which it asked for one)"},
		{"client certificate of another CA", publisher.Config{URLs: []string{url(mutualAddr)}, TLS: publisher.TLSFiles{CAFile: caFile, CertFile: otherCert, KeyFile: otherKeyFile}},
			"refused the client certificate (CN=stranger,O=brokertest, issued by CN=other CA,O=brokertest) of " + otherCert + " (the broker accepts certificates issued by CN=test CA,O=brokertest)"},
		{"not TLS", publisher.Config{URLs: []string{url(notTLS.Addr().String())}, TLS: publisher.TLSFiles{CAFile: caFile}},
			"TLS: the broker's port did not answer with TLS: is it the plain AMQP port (5672)?"},
		{"amqp:// to a TLS port", publisher.Config{URLs: []string{"amqp://user:s3cret@" + plainAddr + "/"}},
			"the broker's port did not answer with AMQP: is it a TLS port? then use amqps://"},
		{"unreadable CA file", publisher.Config{URLs: []string{url(plainAddr)}, TLS: publisher.TLSFiles{CAFile: filepath.Join(dir, "gone.pem")}},
			"the TLS CA file " + filepath.Join(dir, "gone.pem") + ": cannot read it: no such file or directory"},
		{"EXTERNAL, key missing", publisher.Config{URLs: []string{"amqps://" + mutualAddr + "/"}, AuthMechanism: publisher.AuthExternal, TLS: publisher.TLSFiles{CAFile: caFile, CertFile: clientCert, KeyFile: filepath.Join(dir, "gone.key")}},
			"the TLS client certificate or key file " + filepath.Join(dir, "gone.key") + ": cannot read it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := serveOnce(t, tt.cfg)
			t.Logf("%v", err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Serve = %v\nwant it to say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
	// With the client certificate the CA issued, the handshake succeeds: the
	// failure is then the AMQP one of this fake broker, which is no TLS one.
	err = serveOnce(t, publisher.Config{URLs: []string{url(mutualAddr)}, TLS: publisher.TLSFiles{CAFile: caFile, CertFile: clientCert, KeyFile: clientKeyFile}})
	if strings.Contains(err.Error(), "TLS") {
		t.Errorf("with a good client certificate: %v, want no TLS failure", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte("dial amqps://user:xxxxx@")) {
		t.Errorf("the failure does not name the broker, redacted: %v", err)
	}
}
