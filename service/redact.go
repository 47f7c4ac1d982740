package service

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/publisher-dev/publisher/publisher"
)

// userinfoPassword matches the password of any URL in a text
// (scheme://user:password@).
var userinfoPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*):[^@\s]*@`)

// minBarePassword is the shortest secret masked wherever it appears, not
// only inside a URL: a shorter one would mask letters of every word.
const minBarePassword = 4

// redactError is the text /debug/supervision shows for a failure. The
// publisher's errors already show broker URLs through publisher.RedactURL;
// this masks again, whatever produced the text: each configured broker URL
// as RedactURL shows it, its password (decoded and as written) and the
// auth token wherever they appear (a password equal to its user name is
// masked only in URLs: the user name is no secret, and masking it everywhere
// would blank the URLs' user too), and the password of any other URL.
func (s *Service) redactError(err error) string {
	text := err.Error()
	secrets := []string{s.cfg.AuthToken}
	for _, raw := range s.cfg.AMQPURLs {
		text = strings.ReplaceAll(text, raw, publisher.RedactURL(raw))
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok && pw != u.User.Username() {
				secrets = append(secrets, pw, url.PathEscape(pw), url.QueryEscape(pw))
			}
		}
	}
	for _, secret := range secrets {
		if len(secret) >= minBarePassword {
			text = strings.ReplaceAll(text, secret, "xxxxx")
		}
	}
	return userinfoPassword.ReplaceAllString(text, "${1}:xxxxx@")
}
