package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/publisher-dev/publisher/metrics"
)

// The client certificate's expiry is a gauge of seconds since the epoch,
// read at each scrape; a scrape when it cannot be read has no sample.
func TestClientCertExpiry(t *testing.T) {
	checkLeaks(t)
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	expiry, readable := time.Unix(1893456000, 0), true
	if err := m.WatchClientCert(func() (time.Time, bool) { return expiry, readable }); err != nil {
		t.Fatal(err)
	}
	const name = "publisher_tls_client_cert_expiry_timestamp_seconds"
	want := `
# HELP publisher_tls_client_cert_expiry_timestamp_seconds When the client certificate presented to the broker expires (its notAfter), in seconds since the Unix epoch.
# TYPE publisher_tls_client_cert_expiry_timestamp_seconds gauge
publisher_tls_client_cert_expiry_timestamp_seconds 1.893456e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), name); err != nil {
		t.Fatal(err)
	}
	readable = false
	if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 0 {
		t.Fatalf("an unreadable certificate: %d samples (%v), want none", n, err)
	}
}
