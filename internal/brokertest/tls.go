package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TLSOptions add a TLS listener to a private node (Options.TLS), with a CA
// and a server certificate made for the node (crypto/x509, ECDSA P-256),
// valid for DNS:localhost and IP:127.0.0.1. The node verifies a client
// certificate when one is sent (ssl_options.verify = verify_peer), against
// its CA.
type TLSOptions struct {
	// RequireClientCert refuses a client without a certificate during the
	// handshake (ssl_options.fail_if_no_peer_cert = true): mutual TLS.
	RequireClientCert bool
	// External enables SASL EXTERNAL (the rabbitmq_auth_mechanism_ssl
	// plugin): the user is the client certificate's common name
	// (ssl_cert_login_from = common_name), its password is not checked; PLAIN
	// and AMQPLAIN stay enabled. Create the user with Node.AddUser.
	External bool
	// ServerNotAfter is when the node's certificate expires (zero: in a
	// day); a time in the past makes a node whose certificate has expired.
	ServerNotAfter time.Time
}

// NodeTLS is a node's TLS listener (Node.TLS).
type NodeTLS struct {
	Port int
	// CA signed the node's certificate and verifies its clients' (issue
	// client certificates with CA.Issue).
	CA *CA
	// CAFile is the CA's certificate (PEM), readable by anyone.
	CAFile string
}

// Addr is 127.0.0.1:<Port>.
func (l *NodeTLS) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Port)) }

// URL is amqps://guest:guest@127.0.0.1:<Port>/.
func (l *NodeTLS) URL() string { return "amqps://guest:guest@" + l.Addr() + "/" }

// CA is a throwaway certificate authority for tests.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA named name, valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := newCA(name)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	return ca
}

func newCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"brokertest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("making CA %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}, nil
}

// CertOptions describe a certificate CA.Issue makes.
type CertOptions struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	// NotBefore and NotAfter bound its validity (zero: an hour ago, and a
	// day from now).
	NotBefore, NotAfter time.Time
	// Server makes a server certificate (extended key usage serverAuth);
	// else a client certificate (clientAuth).
	Server bool
}

// Issue returns a certificate signed by ca and its private key (PKCS #8),
// both PEM-encoded.
func (ca *CA) Issue(t testing.TB, o CertOptions) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.issue(o)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	return certPEM, keyPEM
}

func (ca *CA) issue(o CertOptions) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	usage := x509.ExtKeyUsageClientAuth
	if o.Server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: o.CommonName, Organization: []string{"brokertest"}},
		DNSNames:     o.DNSNames,
		IPAddresses:  o.IPs,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing %q: %w", o.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// serial is a random 128-bit certificate serial number.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// WriteFile writes data to a file named name in dir (mode 0600) and returns
// its path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	return path
}

// writeTLSFiles makes the node's CA and server certificate in Dir/tls and
// returns the lines of rabbitmq.conf for its TLS listener. The files end up
// owned by user rabbitmq (writeFiles chowns the whole directory), the key
// readable by it alone.
func (n *Node) writeTLSFiles() (string, error) {
	o := n.opts.TLS
	ca, err := newCA("brokertest CA " + n.Name)
	if err != nil {
		return "", err
	}
	certPEM, keyPEM, err := ca.issue(CertOptions{
		CommonName: "localhost",
		DNSNames:   []string{"localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
		Server:     true,
	})
	if err != nil {
		return "", err
	}
	dir := n.path("tls")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{{"ca.pem", ca.CertPEM, 0o644}, {"server.pem", certPEM, 0o644}, {"server.key", keyPEM, 0o600}}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return "", err
		}
	}
	n.TLS = &NodeTLS{Port: n.tlsPort, CA: ca, CAFile: filepath.Join(dir, "ca.pem")}
	conf := fmt.Sprintf("listeners.ssl.local = 127.0.0.1:%d\n", n.tlsPort) +
		"ssl_options.cacertfile = " + filepath.Join(dir, "ca.pem") + "\n" +
		"ssl_options.certfile = " + filepath.Join(dir, "server.pem") + "\n" +
		"ssl_options.keyfile = " + filepath.Join(dir, "server.key") + "\n" +
		"ssl_options.verify = verify_peer\n" +
		"ssl_options.fail_if_no_peer_cert = " + strconv.FormatBool(o.RequireClientCert) + "\n"
	if o.External {
		conf += "auth_mechanisms.1 = PLAIN\nauth_mechanisms.2 = AMQPLAIN\nauth_mechanisms.3 = EXTERNAL\n" +
			"ssl_cert_login_from = common_name\n"
	}
	return conf, nil
}

// AddUser creates user on the node with password and every permission on
// the default virtual host (for a client authenticated with EXTERNAL, the
// user is its certificate's common name and the password is not checked).
func (n *Node) AddUser(user, password string) error {
	if _, err := n.ctl("add_user "+user+" xxxxx", "add_user", user, password); err != nil {
		return err
	}
	_, err := n.Ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
	return err
}

// ChangePassword sets user's password on the node.
func (n *Node) ChangePassword(user, password string) error {
	_, err := n.ctl("change_password "+user+" xxxxx", "change_password", user, password)
	return err
}
