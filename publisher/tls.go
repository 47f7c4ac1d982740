package publisher

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AuthMechanism is how the publisher authenticates to the broker (the SASL
// mechanism of the AMQP handshake).
type AuthMechanism string

const (
	// AuthPlain logs in with the user name and password of the broker URL
	// (the default).
	AuthPlain AuthMechanism = "PLAIN"
	// AuthExternal lets the broker take the identity from the client
	// certificate (TLSFiles.CertFile): RabbitMQ's rabbitmq_auth_mechanism_ssl
	// plugin, the user named by the certificate (its common name, with
	// ssl_cert_login_from = common_name). The URLs must be amqps:// and carry
	// no user or password.
	AuthExternal AuthMechanism = "EXTERNAL"
)

// TLSFiles configure the TLS of amqps:// connections. Every file is read anew
// at every connection attempt, so a certificate, key or CA bundle replaced on
// disk (a renewed certificate, a rotated Secret) is used from the next
// connection on, without a restart of the process; a file that cannot be read
// or parsed then fails that attempt (the supervisor retries it with backoff).
// Connections use TLS 1.2 at least and always verify the broker's certificate:
// there is no setting that turns verification off.
type TLSFiles struct {
	// CAFile is a PEM bundle of the certificate authorities that verify the
	// broker's certificate; empty: the system's roots.
	CAFile string
	// CertFile and KeyFile are the client certificate (PEM, the leaf first,
	// then any intermediates) and its unencrypted private key, for mutual
	// TLS; both or neither. They may name the same file.
	CertFile, KeyFile string
	// ServerName is the name the broker's certificate must carry; empty: the
	// URL's host. Set it when the URLs name the brokers by address, or by a
	// name their certificate does not carry.
	ServerName string
}

// FileError is a file of the configuration that cannot be read or used.
// Its text names the file by its path and says what is wrong in words of
// its own: it never quotes the file's content (a key, a password).
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// readFile reads path, its error the operating system's reason alone (the
// path is the FileError's).
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &FileError{path, fmt.Errorf("cannot read it: %w", err)}
	}
	return b, nil
}

// pemBlocks returns the PEM blocks of data of type typ, and the types of the
// others.
func pemBlocks(data []byte, typ string) (blocks []*pem.Block, others []string) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return blocks, others
		}
		if b.Type == typ {
			blocks = append(blocks, b)
		} else {
			others = append(others, b.Type)
		}
	}
}

// LoadCAFile reads a PEM bundle of CA certificates. Its errors are
// *FileError.
func LoadCAFile(path string) (*x509.CertPool, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	blocks, _ := pemBlocks(data, "CERTIFICATE")
	if len(blocks) == 0 {
		return nil, &FileError{path, errors.New("holds no PEM certificate (a CA bundle is one or more -----BEGIN CERTIFICATE----- blocks)")}
	}
	pool := x509.NewCertPool()
	for i, b := range blocks {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, &FileError{path, fmt.Errorf("certificate %d of %d does not parse: %w", i+1, len(blocks), err)}
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// LoadKeyPair reads a certificate (PEM, the leaf first) and its private key
// (PEM: PKCS #8, PKCS #1 or SEC 1; not encrypted) and checks that they
// belong together. Its errors are *FileError, naming the file at fault (the
// key file when the two do not match); the returned certificate's Leaf is
// set.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readFile(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	certs, others := pemBlocks(certPEM, "CERTIFICATE")
	if len(certs) == 0 {
		why := "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
		if hasKeyBlock(others) {
			why = "holds a private key but no certificate (are the certificate and key files swapped?)"
		}
		return tls.Certificate{}, &FileError{certFile, errors.New(why)}
	}
	for i, b := range certs {
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return tls.Certificate{}, &FileError{certFile, fmt.Errorf("certificate %d of %d does not parse: %w", i+1, len(certs), err)}
		}
	}
	if err := checkKey(keyPEM); err != nil {
		return tls.Certificate{}, &FileError{keyFile, err}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// Both parse (checked above): the key is not the certificate's.
		return tls.Certificate{}, &FileError{keyFile, fmt.Errorf("the private key does not match the certificate in %s", certFile)}
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return tls.Certificate{}, &FileError{certFile, err}
		}
	}
	return pair, nil
}

func hasKeyBlock(types []string) bool {
	for _, t := range types {
		if t == "PRIVATE KEY" || strings.HasSuffix(t, " PRIVATE KEY") {
			return true
		}
	}
	return false
}

// checkKey says what makes keyPEM unusable as a private key, in words that
// quote nothing of it.
func checkKey(keyPEM []byte) error {
	var others []string
	for rest := keyPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "ENCRYPTED PRIVATE KEY" || (strings.HasSuffix(b.Type, "PRIVATE KEY") && b.Headers["Proc-Type"] != ""):
			return errors.New("the private key is encrypted; the service takes no passphrase: decrypt it (openssl pkey -in key.pem -out key-plain.pem) and keep it in a file only the service can read")
		case b.Type == "PRIVATE KEY":
			if _, err := x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
				return errors.New("the PKCS #8 private key does not parse")
			}
			return nil
		case b.Type == "RSA PRIVATE KEY":
			if _, err := x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
				return errors.New("the PKCS #1 RSA private key does not parse")
			}
			return nil
		case b.Type == "EC PRIVATE KEY":
			if _, err := x509.ParseECPrivateKey(b.Bytes); err != nil {
				return errors.New("the SEC 1 EC private key does not parse")
			}
			return nil
		}
		others = append(others, b.Type)
	}
	if len(others) > 0 && !hasKeyBlock(others) {
		return fmt.Errorf("holds no private key, only %s blocks (are the certificate and key files swapped?)", strings.Join(others, ", "))
	}
	return errors.New("holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
}

// ClientCertExpiry is when the client certificate in t.CertFile expires:
// the certificate every new connection presents (read now). It is what
// publisher_tls_client_cert_expiry_timestamp_seconds shows.
func (t TLSFiles) ClientCertExpiry() (time.Time, error) {
	data, err := readFile(t.CertFile)
	if err != nil {
		return time.Time{}, err
	}
	certs, _ := pemBlocks(data, "CERTIFICATE")
	if len(certs) == 0 {
		return time.Time{}, &FileError{t.CertFile, errors.New("holds no PEM certificate")}
	}
	leaf, err := x509.ParseCertificate(certs[0].Bytes)
	if err != nil {
		return time.Time{}, &FileError{t.CertFile, err}
	}
	return leaf.NotAfter, nil
}

// checkAuth reports an AuthMechanism the publisher does not know, or
// AuthExternal without a client certificate.
func (c *Config) checkAuth() error {
	switch c.AuthMechanism {
	case "", AuthPlain:
		return nil
	case AuthExternal:
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			return errors.New("publisher: EXTERNAL authentication takes the identity from the client certificate: set PUBLISHER_AMQP_TLS_CERT_FILE and PUBLISHER_AMQP_TLS_KEY_FILE")
		}
		return nil
	}
	return fmt.Errorf("publisher: unknown authentication mechanism %q: want PLAIN or EXTERNAL", string(c.AuthMechanism))
}

// uriTLSParameters are the query parameters with which amqp091-go would read
// TLS files or a SASL mechanism of its own; the publisher takes these from
// TLSFiles and AuthMechanism, so a URL carrying them is refused rather than
// half-ignored.
var uriTLSParameters = []struct{ param, instead string }{
	{"cacertfile", "PUBLISHER_AMQP_TLS_CA_FILE"},
	{"certfile", "PUBLISHER_AMQP_TLS_CERT_FILE"},
	{"keyfile", "PUBLISHER_AMQP_TLS_KEY_FILE"},
	{"server_name_indication", "PUBLISHER_AMQP_TLS_SERVER_NAME"},
	{"auth_mechanism", "PUBLISHER_AMQP_AUTH_MECHANISM"},
}

// CheckURL reports what makes u unusable as a broker URL with c's TLS and
// authentication settings: it does not parse (DescribeURLError), its port is
// out of range, it is amqp:// while TLS files or EXTERNAL are configured
// (they would be ignored: the connection would not be encrypted), it carries
// a user or password with EXTERNAL, or a query parameter that sets TLS or
// SASL options. The error begins with u, its password masked (RedactURL),
// and quotes nothing else of it.
func (c *Config) CheckURL(u string) error {
	redacted := RedactURL(u)
	uri, err := amqp.ParseURI(u)
	if err != nil {
		return fmt.Errorf("%s: %s", redacted, DescribeURLError(err))
	}
	if uri.Port < 1 || uri.Port > 65535 {
		return fmt.Errorf("%s: invalid port (a number from 1 to 65535)", redacted)
	}
	if pu, err := url.Parse(u); err == nil {
		q := pu.Query()
		for _, p := range uriTLSParameters {
			if q.Has(p.param) {
				return fmt.Errorf("%s: the URL's %s parameter is not read; set %s instead", redacted, p.param, p.instead)
			}
		}
		if c.AuthMechanism == AuthExternal && pu.User != nil {
			return fmt.Errorf("%s: PUBLISHER_AMQP_AUTH_MECHANISM=EXTERNAL takes the identity from the client certificate: remove the user name and password from the URL (amqps://host:5671/vhost)", redacted)
		}
	}
	if uri.Scheme != "amqps" {
		switch {
		case c.AuthMechanism == AuthExternal:
			return fmt.Errorf("%s: PUBLISHER_AMQP_AUTH_MECHANISM=EXTERNAL needs TLS: use amqps:// (the broker's TLS port, 5671 by default)", redacted)
		case c.TLS != (TLSFiles{}):
			return fmt.Errorf("%s: PUBLISHER_AMQP_TLS_* is set but the URL is not TLS: use amqps:// (the broker's TLS port, 5671 by default), or unset them", redacted)
		}
	}
	return nil
}

// urlsFileStart offsets the first URL of a PUBLISHER_AMQP_URLS_FILE dialled
// by this process, so that a fleet of publishers spreads over a cluster's
// nodes as it does with Config.URLs. Chosen once, never changed.
var urlsFileStart = rand.IntN(1 << 20)

// brokerURL is the URL the next connection attempt dials: the Config.URLs
// entry at urlIndex or, with Config.URLsFile, that file's, read now (so
// credentials rotated in the file are used from the next connection on).
// Only Serve calls it, holding serving.
func (p *Publisher) brokerURL() (string, error) {
	if p.cfg.URLsFile == "" {
		return p.cfg.URLs[p.urlIndex%len(p.cfg.URLs)], nil
	}
	urls, err := p.cfg.ReadURLsFile()
	if err != nil {
		return "", err
	}
	return urls[(urlsFileStart+p.urlIndex)%len(urls)], nil
}

// ReadURLsFile reads the broker URLs of c.URLsFile: separated by commas or
// line breaks, blanks around them and lines starting with '#' ignored; each
// checked with CheckURL. Its errors are *FileError and never quote a
// password.
func (c *Config) ReadURLsFile() ([]string, error) {
	data, err := readFile(c.URLsFile)
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, u := range strings.Split(line, ",") {
			if u = strings.TrimSpace(u); u == "" {
				continue
			}
			if err := c.CheckURL(u); err != nil {
				return nil, &FileError{c.URLsFile, err}
			}
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return nil, &FileError{c.URLsFile, errors.New("holds no broker URL")}
	}
	return urls, nil
}

// clientTLS is the TLS configuration of one connection attempt, its files
// read now, and the handshake's notes for explaining a failure.
func (t TLSFiles) clientTLS() (*tls.Config, *handshakeNotes, error) {
	notes := &handshakeNotes{caFile: t.CAFile, certFile: t.CertFile}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: t.ServerName,
		// Called once the broker's certificate is verified: the client's
		// side of the handshake is done.
		VerifyConnection: func(tls.ConnectionState) error { notes.handshook = true; return nil },
	}
	if t.CAFile != "" {
		pool, err := LoadCAFile(t.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("the TLS CA file %w", err)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		pair, err := LoadKeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("the TLS client certificate or key file %w", err)
		}
		notes.cert = pair.Leaf
		// Sent whenever the broker asks, even when the broker names CAs
		// that did not issue it (crypto/tls would then send none): the
		// broker's own refusal ("unknown CA") is the clearer failure.
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			notes.asked, notes.acceptable = true, cri.AcceptableCAs
			return &pair, nil
		}
	} else {
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			notes.asked, notes.acceptable = true, cri.AcceptableCAs
			return &tls.Certificate{}, nil
		}
	}
	return cfg, notes, nil
}

// handshakeNotes is what one connection attempt learnt of the TLS handshake,
// written by crypto/tls on the dialling goroutine (GetClientCertificate runs
// inside Handshake, which DialConfig calls), read on it afterwards.
type handshakeNotes struct {
	caFile, certFile string
	cert             *x509.Certificate // the client certificate, nil without one
	asked            bool              // the broker asked for a client certificate
	handshook        bool              // the broker's certificate was verified
	acceptable       [][]byte          // the CAs it said it accepts (DER names)
}

// The TLS alerts a broker sends about the client's certificate or the
// handshake (RFC 8446, section 6).
const (
	alertHandshakeFailure      tls.AlertError = 40
	alertBadCertificate        tls.AlertError = 42
	alertUnsupportedCert       tls.AlertError = 43
	alertCertificateRevoked    tls.AlertError = 44
	alertCertificateExpired    tls.AlertError = 45
	alertCertificateUnknown    tls.AlertError = 46
	alertUnknownCA             tls.AlertError = 48
	alertAccessDenied          tls.AlertError = 49
	alertProtocolVersion       tls.AlertError = 70
	alertInsufficientSecurity  tls.AlertError = 71
	alertCertificateRequired   tls.AlertError = 116
	alertUnrecognizedName      tls.AlertError = 112
	alertNoApplicationProtocol tls.AlertError = 120
)

var knownAlerts = []tls.AlertError{alertHandshakeFailure, alertBadCertificate, alertUnsupportedCert,
	alertCertificateRevoked, alertCertificateExpired, alertCertificateUnknown, alertUnknownCA,
	alertAccessDenied, alertProtocolVersion, alertInsufficientSecurity, alertCertificateRequired,
	alertUnrecognizedName, alertNoApplicationProtocol}

// remoteAlert is the TLS alert the broker sent, found in err: during the
// handshake crypto/tls returns it as a *net.OpError "remote error" (with an
// unexported alert type, told apart by its text, which is AlertError's); in
// TLS 1.3 a refused client certificate arrives after the client's side of
// the handshake, so amqp091-go reports it as an *amqp.Error whose reason is
// "remote error: " and that text. ok is true for an alert of neither list
// too (a is then 0).
func remoteAlert(err error) (a tls.AlertError, ok bool) {
	if errors.As(err, &a) {
		return a, true
	}
	var (
		op   *net.OpError
		aerr *amqp.Error
		text string
	)
	switch {
	case errors.As(err, &op) && op.Op == "remote error" && op.Err != nil:
		text = op.Err.Error()
	case errors.As(err, &aerr) && strings.HasPrefix(aerr.Reason, "remote error: tls: "):
		text = strings.TrimPrefix(aerr.Reason, "remote error: ")
	default:
		return 0, false
	}
	for _, a := range knownAlerts {
		if text == a.Error() {
			return a, true
		}
	}
	return 0, true
}

// explainDial says in words why a dial of uri failed, before err (which is
// wrapped, for errors.Is and As): the broker's certificate not trusted, not
// for this name, expired; a client certificate required and not sent,
// refused, expired; not TLS at all; the login refused. notes is nil when the
// URL is not amqps. None of it quotes a password: the URL's user name at
// most, and the certificates' subjects, which are public.
func explainDial(err error, uri amqp.URI, mech AuthMechanism, notes *handshakeNotes) error {
	if why := dialReason(err, uri, mech, notes); why != "" {
		return fmt.Errorf("%s: %w", why, err)
	}
	return err
}

func dialReason(err error, uri amqp.URI, mech AuthMechanism, notes *handshakeNotes) string {
	var (
		verr     *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
		aerr     *amqp.Error
	)
	var leaf *x509.Certificate // the broker's own certificate, first of the chain it sent
	if errors.As(err, &verr) && len(verr.UnverifiedCertificates) > 0 {
		leaf = verr.UnverifiedCertificates[0]
	}
	// which names a certificate of the broker's chain: its own, or a CA's
	// certificate it sent along.
	which := func(c *x509.Certificate) string {
		if leaf == nil || c == nil || c.Equal(leaf) {
			return "the broker's certificate" + describeCert(c, true)
		}
		return "the CA certificate" + describeCert(c, true) + " in the broker's chain"
	}
	switch {
	case errors.As(err, &unknown):
		trusted := "the system's root CAs (set PUBLISHER_AMQP_TLS_CA_FILE to the CA that issued the broker's certificate)"
		if notes != nil && notes.caFile != "" {
			trusted = "the CA file " + notes.caFile + " (is it the CA that issued the broker's certificate?)"
		}
		c := leaf
		if c == nil {
			c = unknown.Cert
		}
		why := "TLS: the broker's certificate" + describeCert(c, true) + " is signed by an unknown authority"
		if leaf != nil && unknown.Cert != nil && !unknown.Cert.Equal(leaf) {
			why += " (its chain ends at " + unknown.Cert.Subject.String() + ")"
		}
		return why + ": not by one of " + trusted
	case errors.As(err, &hostname):
		return fmt.Sprintf("TLS: the broker's certificate is not valid for the name %q: it is for %s; dial a name it carries, or set PUBLISHER_AMQP_TLS_SERVER_NAME to one",
			hostname.Host, certNames(hostname.Certificate))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		c := invalid.Cert
		when := "it expired at " + c.NotAfter.UTC().Format(time.RFC3339)
		if now := time.Now(); now.Before(c.NotBefore) {
			when = "it is not valid before " + c.NotBefore.UTC().Format(time.RFC3339)
		}
		return "TLS: " + which(c) + " has expired or is not valid yet: " + when +
			" (the clock here says " + time.Now().UTC().Format(time.RFC3339) + ")"
	case errors.As(err, &invalid):
		return "TLS: " + which(invalid.Cert) + " is not valid here"
	case errors.As(err, &verr):
		return "TLS: the broker's certificate is not valid here"
	case errors.As(err, &record):
		return "TLS: the broker's port did not answer with TLS: is it the plain AMQP port (5672)? amqps:// needs the broker's TLS port (5671 by default)"
	}
	if a, ok := remoteAlert(err); ok && notes != nil {
		return "TLS: " + alertReason(a, notes)
	}
	if errors.As(err, &aerr) {
		switch {
		case errors.Is(err, amqp.ErrSASL) || aerr.Reason == amqp.ErrSASL.Reason:
			if mech == AuthExternal {
				return "the broker does not offer the EXTERNAL mechanism: enable its rabbitmq_auth_mechanism_ssl plugin and list EXTERNAL in its auth_mechanisms"
			}
			return "the broker does not offer the PLAIN mechanism (its auth_mechanisms)"
		case aerr.Code == amqp.AccessRefused:
			if mech == AuthExternal {
				return externalRefused(notes)
			}
			return fmt.Sprintf("the broker refused the login of user %q: wrong user name or password (in the URL), or a user that may not connect from here", uri.Username)
		case uri.Scheme == "amqp" && aerr.Code == amqp.FrameError:
			return "the broker's port did not answer with AMQP: is it a TLS port? then use amqps://"
		}
	}
	// In TLS 1.3 the broker checks the client certificate after the client's
	// side of the handshake ended; the alert that says why may be lost when
	// the connection is reset first (seen against RabbitMQ 3.10: the AMQP
	// header's write failed with ECONNRESET) or read by amqp091-go's reader
	// before the handshake's first read (which then reports the connection
	// as closed, or, once the reader has closed the socket, "use of closed
	// network connection").
	if notes != nil && notes.handshook && notes.asked && closedByPeer(err) {
		if notes.cert == nil {
			return "TLS: the broker most likely requires a client certificate and none is configured: set PUBLISHER_AMQP_TLS_CERT_FILE and PUBLISHER_AMQP_TLS_KEY_FILE (it closed the connection right after a handshake in which it asked for one)"
		}
		why := "TLS: the broker most likely refused " + notes.ours() + ": it closed the connection right after the handshake"
		if now := time.Now(); now.After(notes.cert.NotAfter) {
			why += "; the certificate expired at " + notes.cert.NotAfter.UTC().Format(time.RFC3339) + ": renew it"
		}
		return why
	}
	return ""
}

// closedByPeer reports whether err is the connection closed or reset by the
// broker, as amqp091-go or the socket report it (net.ErrClosed: amqp091-go's
// reader closed the socket on the broker's close before the dial's read;
// the dial's own cancellation is told apart before, by its context).
func closedByPeer(err error) bool {
	var aerr *amqp.Error
	switch {
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed):
		return true
	case errors.As(err, &aerr):
		return aerr.Reason == amqp.ErrClosed.Reason || strings.Contains(aerr.Reason, "EOF") ||
			strings.Contains(aerr.Reason, "connection reset") || strings.Contains(aerr.Reason, net.ErrClosed.Error())
	}
	return false
}

// ours describes the client certificate sent and, when the broker named
// them, the CAs it accepts.
func (n *handshakeNotes) ours() string {
	s := "the client certificate" + describeCert(n.cert, true) + " of " + n.certFile
	if len(n.acceptable) > 0 {
		s += " (the broker accepts certificates issued by " + acceptableCAs(n.acceptable) + ")"
	}
	return s
}

// alertReason explains a TLS alert the broker sent.
func alertReason(a tls.AlertError, n *handshakeNotes) string {
	sent := n.cert != nil && n.asked
	ours := n.ours
	switch {
	case a == alertCertificateRequired && n.cert == nil, a == alertHandshakeFailure && n.cert == nil && n.asked:
		return "the broker requires a client certificate and none is configured: set PUBLISHER_AMQP_TLS_CERT_FILE and PUBLISHER_AMQP_TLS_KEY_FILE"
	case a == alertCertificateRequired:
		return "the broker requires a client certificate and did not get one"
	case a == alertCertificateExpired && sent:
		return "the broker refused " + ours() + ": the certificate expired at " + n.cert.NotAfter.UTC().Format(time.RFC3339) + " (or is not valid yet): renew it"
	case (a == alertUnknownCA || a == alertBadCertificate || a == alertCertificateUnknown ||
		a == alertUnsupportedCert || a == alertCertificateRevoked || a == alertAccessDenied) && sent:
		return "the broker refused " + ours() + " (" + a.Error() + ")"
	case a == alertHandshakeFailure && sent:
		return "the broker refused the handshake (" + a.Error() + "): it may not accept " + ours() + ", or share no TLS version or cipher suite with this client"
	case a == alertProtocolVersion || a == alertInsufficientSecurity:
		return "the broker shares no TLS version or cipher suite with this client, which offers TLS 1.2 and 1.3 (" + a.Error() + ")"
	case a == 0:
		return "the broker ended the TLS handshake"
	}
	return "the broker ended the TLS handshake (" + a.Error() + ")"
}

// externalRefused explains a refused EXTERNAL login.
func externalRefused(n *handshakeNotes) string {
	switch {
	case n == nil || n.cert == nil:
		return "the broker refused the EXTERNAL login: no client certificate is configured"
	case !n.asked:
		return "the broker refused the EXTERNAL login: it did not ask for the client certificate (its ssl_options.verify must be verify_peer)"
	}
	return fmt.Sprintf("the broker refused the EXTERNAL login of the client certificate%s: the broker has no user %q (with ssl_cert_login_from = common_name; else the user is the whole subject, %q), or it may not connect here",
		describeCert(n.cert, false), n.cert.Subject.CommonName, n.cert.Subject.String())
}

// describeCert is " (subject …, issued by …)" for c, or "" for nil.
func describeCert(c *x509.Certificate, issuer bool) string {
	if c == nil {
		return ""
	}
	s := " (" + c.Subject.String()
	if issuer {
		s += ", issued by " + c.Issuer.String()
	}
	return s + ")"
}

// certNames lists the names a certificate is valid for.
func certNames(c *x509.Certificate) string {
	var names []string
	for _, d := range c.DNSNames {
		names = append(names, "DNS:"+d)
	}
	for _, ip := range c.IPAddresses {
		names = append(names, "IP:"+ip.String())
	}
	if len(names) == 0 {
		return "no name (it has no subjectAltName)"
	}
	return strings.Join(names, ", ")
}

// acceptableCAs is the distinguished names of a CertificateRequest's CA list.
func acceptableCAs(ders [][]byte) string {
	var names []string
	for _, der := range ders {
		var rdn pkix.RDNSequence
		if _, err := asn1.Unmarshal(der, &rdn); err != nil {
			continue
		}
		var n pkix.Name
		n.FillFromRDNSequence(&rdn)
		names = append(names, n.String())
	}
	return strings.Join(names, "; ")
}
