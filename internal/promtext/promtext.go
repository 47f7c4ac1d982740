// Package promtext reads values out of a Prometheus text exposition (what a
// /metrics endpoint answers) for tests and the load tool. It parses with
// github.com/prometheus/common/expfmt and flattens the families into the
// samples the text format writes, one per line: a histogram x yields
// x_bucket{le=...}, x_sum and x_count, a summary x{quantile=...}, x_sum and
// x_count. A name therefore means exactly the name at the start of a sample
// line: x does not match x_total or x_bucket.
//
// A series that is not there is an error (ErrMissing), never a 0: a caller
// that polls for "the spool is empty" or checks "failures == 0" must not pass
// on a renamed metric or a broken /metrics.
package promtext

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Samples are the samples of one exposition.
type Samples model.Vector

// Parse reads a text exposition. It fails on anything the text format does
// not allow (a value that is not a number, a broken label set, a second TYPE
// line for a family).
func Parse(exposition io.Reader) (Samples, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(exposition)
	if err != nil {
		return nil, fmt.Errorf("promtext: %w", err)
	}
	var all model.Vector
	for _, f := range families {
		v, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{}, f)
		if err != nil {
			return nil, fmt.Errorf("promtext: %w", err)
		}
		all = append(all, v...)
	}
	return Samples(all), nil
}

// Sum returns the sum of the samples called name that carry every label
// given, and whether there was any. A label is written as in the text
// format, name="value" (for example `outcome="confirmed"`), and matches a
// sample with exactly that value; a sample may carry other labels besides.
// Sum panics on a label not written that way: it is a mistake in the caller.
func (s Samples) Sum(name string, labels ...string) (sum float64, found bool) {
	want := make(model.LabelSet, len(labels))
	for _, l := range labels {
		k, v := parseLabel(l)
		want[k] = v
	}
	for _, smp := range s {
		if string(smp.Metric[model.MetricNameLabel]) != name || !hasLabels(smp.Metric, want) {
			continue
		}
		sum += float64(smp.Value)
		found = true
	}
	return sum, found
}

// ErrMissing: no sample has the name and labels asked for. A test that
// reads a metric must fail on it: a renamed metric, a label value that is
// never written or a /metrics that answers something else must not read as 0.
var ErrMissing = errors.New("promtext: no such series")

// Get is Sum that fails when no sample matches: the error wraps ErrMissing
// and names the series asked for.
func (s Samples) Get(name string, labels ...string) (float64, error) {
	v, found := s.Sum(name, labels...)
	if !found {
		return 0, fmt.Errorf("%w: %s{%s}", ErrMissing, name, strings.Join(labels, ","))
	}
	return v, nil
}

// parseLabel splits `name="value"` into its name and unquoted value.
func parseLabel(l string) (model.LabelName, model.LabelValue) {
	k, quoted, ok := strings.Cut(l, "=")
	v, err := strconv.Unquote(quoted)
	if !ok || k == "" || err != nil || !strings.HasPrefix(quoted, `"`) {
		panic(fmt.Sprintf("promtext: label %q: want name=\"value\"", l))
	}
	return model.LabelName(k), model.LabelValue(v)
}

func hasLabels(m model.Metric, want model.LabelSet) bool {
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			return false
		}
	}
	return true
}
