package publisher_test

import (
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/publisher-dev/publisher/publisher"
)

// malformedURLs are broker URLs that do not parse, each with the password
// "s3cr" + something; fragments of it must never be printed.
var malformedURLs = []string{
	"amqp://user:s3cr%zzet@127.0.0.1/", // a bad percent-escape inside the password
	"amqp://user:s3cret@127.0.0.1:99999999/",
	"amqp://user:s3cret@127.0.0.1:port/",
	"amqp://user:s3cret@[::1/",       // an IPv6 host without its ]
	"amqp://user:s3cr/et@127.0.0.1/", // an unescaped '/' in the password
	"amqp://user:s3cr?et@127.0.0.1/", // an unescaped '?'
	"amqp://user:s3cr#et@127.0.0.1/", // an unescaped '#'
	"amqp://user:s3cr et@127.0.0.1/", // whitespace
	"amqp://user:s3cr\x7fet@127.0.0.1/",
	"http://user:s3cret@127.0.0.1/",
	"amqp://us/er:s3cret@127.0.0.1/",
	"://user:s3cret@127.0.0.1/",
}

// secretFragments are the parts of those passwords that must not show.
var secretFragments = []string{"s3cr", "cret", "zzet", "%zz", "et@"}

func leaks(s string) string {
	for _, f := range secretFragments {
		if strings.Contains(s, f) {
			return f
		}
	}
	return ""
}

// No output made of a malformed broker URL quotes any part of its password:
// not RedactURL, not DescribeURLError on the parsers' own errors, not New's
// error.
func TestMalformedURLsNeverLeakTheirPassword(t *testing.T) {
	checkLeaks(t)
	for _, u := range malformedURLs {
		if f := leaks(publisher.RedactURL(u)); f != "" {
			t.Errorf("RedactURL(%q) = %q shows %q", u, publisher.RedactURL(u), f)
		}
		if _, err := amqp.ParseURI(u); err != nil {
			if d := publisher.DescribeURLError(err); leaks(d) != "" {
				t.Errorf("DescribeURLError for %q = %q", u, d)
			}
		}
		if _, err := publisher.New(publisher.Config{URLs: []string{u}}); err != nil {
			if f := leaks(err.Error()); f != "" {
				t.Errorf("New(%q): %v shows %q", u, err, f)
			}
		}
	}
}
