package httpapi

import (
	"crypto/sha256"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/publisher-dev/publisher/apps"
	"github.com/publisher-dev/publisher/publisher"
)

// The apps' checks (docs/http-api.md, "Apps: tokens, scopes and rates"):
// a request's app is its bearer token's; its scope decides 403 per message
// (after the global allow-list), its rate 429 for a single publish or a
// batch (nothing published) and a slower stream. They are functions of their
// own, run on decoded messages, so the decoding of batch and stream entries
// can change without them.

// appOf is r's app in set: the anonymous app when set does not
// authenticate, else the app of "Authorization: Bearer <token>" (exactly
// one such header; the scheme case-insensitive, RFC 9110 §11.1), looked up
// by the token's SHA-256 in constant time; nil when there is none.
func appOf(set *apps.Set, r *http.Request) *apps.App {
	if !set.Authenticates() {
		return set.Anonymous()
	}
	v := r.Header["Authorization"]
	if len(v) != 1 {
		return nil
	}
	a := v[0]
	const scheme = "Bearer "
	if len(a) <= len(scheme) || !strings.EqualFold(a[:len(scheme)], scheme) {
		return nil
	}
	return set.Lookup(sha256.Sum256([]byte(a[len(scheme):])))
}

// scopeRefusal is the 403 of a message app may not publish (exchange is
// the AMQP name, "" for the default exchange), or nil.
func scopeRefusal(app *apps.App, exchange, key string) *problem {
	switch {
	case !app.AllowsExchange(exchange):
		return refuse(http.StatusForbidden, "exchange not in the scope of app "+app.Name())
	case !app.AllowsRoutingKey(key):
		return refuse(http.StatusForbidden, "routing key not in the scope of app "+app.Name())
	}
	return nil
}

// takeRate takes n messages from app's bucket: nil when taken; else nothing
// is taken and the answer is 429 with Retry-After (how long until the bucket
// holds n, in whole seconds rounded up), or 413 when n is more than the
// bucket ever holds (what names the request: "batch").
func (h *Handler) takeRate(app *apps.App, n int, what string) *problem {
	wait, err := app.Take(h.rateNow(), n)
	switch {
	case err != nil:
		return refuse(http.StatusRequestEntityTooLarge, what+" of "+strconv.Itoa(n)+" messages, more than the burst of app "+
			app.Name()+" ("+strconv.Itoa(app.Burst())+"): send at most that many at once")
	case wait > 0:
		return &problem{code: http.StatusTooManyRequests, text: "too many requests: over the rate of app " + app.Name() + "; nothing was published",
			retry: true, retryAfter: retryAfterSeconds(wait)}
	}
	return nil
}

// scopeEntries gives every message of a batch that is out of app's scope
// its own 403; a message refused already keeps its answer.
func scopeEntries(app *apps.App, msgs []*publisher.Message, bad []*problem) {
	for i, msg := range msgs {
		if bad[i] == nil {
			bad[i] = scopeRefusal(app, msg.Exchange, msg.RoutingKey)
		}
	}
}

// rateEntries takes from app's bucket every message of a batch that would
// be published, all or none: nil when taken, else the refusal of the whole
// batch (takeRate's 429 or 413).
func (h *Handler) rateEntries(app *apps.App, bad []*problem) *problem {
	n := 0
	for _, b := range bad {
		if b == nil {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return h.takeRate(app, n, "batch")
}

// admitLine checks one decoded stream line against the app of the stream's
// token in the apps in force now, so that a reload applies to the lines read
// after it: 401 when the token is no app's any more, 403 out of its scope.
// It runs on the stream's reader goroutine, which owns st.set and st.app.
func (st *stream) admitLine(msg *publisher.Message) *problem {
	if cur := st.h.appSet(); cur != st.set {
		st.set, st.app = cur, appOf(cur, st.req)
	}
	if st.app == nil {
		return refuse(http.StatusUnauthorized, "the bearer token is no app's any more (the apps were reloaded)")
	}
	return scopeRefusal(st.app, msg.Exchange, msg.RoutingKey)
}

// waitRate takes a token of the stream's app for one line, waiting for it
// when the rate asks (the reader stops reading meanwhile: the stream slows
// down to the rate instead of answering 429). It first hands over the lines
// of group, which must not wait behind this one, and returns group emptied.
// ok is false when the stream ended during the wait (its request's context
// ended: the writer closes quit; the token is given back). A client that
// merely goes away is noticed only once the wait is over, when its line's
// result cannot be written: a stream that is not reading its request cannot
// see it closed.
func (st *stream) waitRate(group []*publisher.Message, lines []int) (_ []*publisher.Message, _ []int, ok bool) {
	d, res := st.app.Reserve(st.h.rateNow())
	if d <= 0 {
		return group, lines, true
	}
	if len(group) > 0 {
		st.send(group, lines)
		group, lines = group[:0], lines[:0]
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		st.h.onRateWait(st.appName, d)
		return group, lines, true
	case <-st.quit:
		res.Cancel(st.h.rateNow())
		return group, lines, false
	}
}
