package apps

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/time/rate"
	"sigs.k8s.io/yaml"

	"github.com/publisher-dev/publisher/internal/amqpname"
)

// The file's fields, in the order the errors list them.
const fieldList = "name, token_sha256, token_file, exchanges, routing_keys, rate, burst"

// maxName bounds an app's name (a label value of the metrics).
const maxName = 64

// maxBurst bounds burst: beyond it a bucket is no limit worth the name, and
// the arithmetic stays far from overflow.
const maxBurst = 1 << 30

// maxShortStr is the longest AMQP short string (exchange names, routing
// keys, and so the patterns).
const maxShortStr = amqpname.MaxShortStr

// maxErrors bounds the problems one error lists.
const maxErrors = 20

// The largest auth file and token file read: far above any real one, and a
// path named by mistake (a log, a device) is refused rather than read
// without end.
const (
	maxFileBytes  = 4 << 20
	maxTokenBytes = 4 << 10
)

// EveryExchange, in an app's exchanges, lets it publish to every exchange
// (PUBLISHER_ALLOWED_EXCHANGES still applies).
const EveryExchange = "*"

// DefaultExchangeName names the default exchange ("") in the file, as in
// request paths and PUBLISHER_ALLOWED_EXCHANGES.
const DefaultExchangeName = "amq.default"

// Load reads the auth file at path (YAML, or JSON), and every token file it
// names (a relative path is relative to the file's directory), into a Set,
// each app with a full bucket. Its error names path and every problem (the
// line of a syntax error, else the app's index, its name when valid, and
// the field) and quotes nothing of the files: neither a token, nor a digest,
// nor a value that is wrong (it may be a token put in the wrong place).
func Load(path string) (*Set, error) {
	s, _, err := load(path)
	return s, err
}

// load is Load, with the fingerprint of what it read (also when the file
// does not load): the file and the token files it names, or the errors of
// those it could not read.
func load(path string) (*Set, [sha256.Size]byte, error) {
	fp := sha256.New()
	data, err := readFile(path, maxFileBytes)
	if err != nil {
		fp.Write([]byte("unreadable\x00" + pathErr(err).Error()))
		return nil, [sha256.Size]byte(fp.Sum(nil)), fmt.Errorf("%s: cannot read it: %w", path, pathErr(err))
	}
	fmt.Fprintf(fp, "%d\x00", len(data))
	fp.Write(data)
	dir := filepath.Dir(path)
	read := func(name string) ([]byte, error) {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		b, err := readFile(name, maxTokenBytes)
		fmt.Fprintf(fp, "\x00%d:%s\x00", len(name), name)
		if err != nil {
			fmt.Fprintf(fp, "unreadable %v", pathErr(err))
			return nil, fmt.Errorf("cannot read %s: %w", name, pathErr(err))
		}
		fmt.Fprintf(fp, "%d\x00", len(b))
		fp.Write(b)
		return b, nil
	}
	s, err := Parse(data, read)
	sum := [sha256.Size]byte(fp.Sum(nil))
	if err != nil {
		return nil, sum, fmt.Errorf("%s: %w", path, err)
	}
	s.fp = sum
	return s, sum, nil
}

// errTooLarge is readFile's error for a file over its limit.
var errTooLarge = errors.New("larger than a file of this kind can be")

// readFile reads the file called name, refusing one of more than limit
// bytes.
func readFile(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		clear(b)
		return nil, fmt.Errorf("%w (%d bytes at most)", errTooLarge, limit)
	}
	return b, nil
}

// pathErr is the operating system's reason without the path it names (the
// caller names it once).
func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Parse reads an auth file's content into a Set; readToken reads a
// token_file (its error is reported with the app and the field; nil refuses
// every token_file). The format
// is docs/configuration.md's "Auth file":
//
//	apps:
//	  - name: orders                 # 1 to 64 of [A-Za-z0-9_.-], unique
//	    token_sha256: "9f86d0…"      # or token_file: a file holding the token
//	    exchanges: [events]          # "*" for every one; none: nowhere
//	    routing_keys: ["orders.#"]   # AMQP topic patterns; absent: any key
//	    rate: 100                    # messages per second; absent: no limit
//	    burst: 200                   # default: the rate, rounded up (at least 1)
//
// Unknown fields, a field given twice, an app with both token_sha256 and
// token_file (or neither), two apps with one name or one token, an empty
// routing_keys list (leave it out for any key), a rate that is not positive
// and a burst without a rate are errors. Every problem is listed (up to 20),
// and none quotes a value of the file.
func Parse(data []byte, readToken func(path string) ([]byte, error)) (*Set, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, errors.New(yamlError(err))
	}
	var top map[string]json.RawMessage
	if err := decode(js, &top); err != nil || top == nil {
		return nil, errors.New(`want an object with an "apps" list`)
	}
	if readToken == nil {
		readToken = func(path string) ([]byte, error) {
			return nil, fmt.Errorf("cannot read %s: no token files here", path)
		}
	}
	p := &parser{readToken: readToken}
	for k := range top {
		if k != "apps" {
			p.bad("", `an unknown field at the top (the file holds one field, "apps")`)
		}
	}
	var raws []json.RawMessage
	if raw, ok := top["apps"]; !ok || decode(raw, &raws) != nil {
		p.bad("", `want an "apps" list`)
		return nil, p.err()
	}
	s := &Set{}
	for i, raw := range raws {
		if a := p.app(i, raw); a != nil {
			s.apps = append(s.apps, a)
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	if len(s.apps) == 0 {
		s.warnings = append(s.warnings, "the auth file has no apps: every publish is refused (401)")
	}
	for i, a := range s.apps {
		if !a.everyExchange && len(a.exchanges) == 0 {
			s.warnings = append(s.warnings, fmt.Sprintf("apps[%d] (%s) has no exchanges: it can publish nowhere (403)", i, a.name))
		}
	}
	return s, nil
}

// yamlError is a YAML (or JSON) syntax error as "line N: what", keeping
// the parser's words only when they are words (letters and spaces: the
// parser's own phrases), never a piece of the file it may quote.
func yamlError(err error) string {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		what, _ := strings.CutPrefix(err.Error(), "yaml: ")
		if !wordsOnly(what) {
			what = "YAML or JSON"
		}
		return "not valid: " + what
	}
	what := strings.TrimSpace(m[2])
	switch {
	case strings.Contains(what, "already set in map"):
		what = "a field given twice"
	case !wordsOnly(what):
		what = "not valid YAML"
	}
	return "line " + m[1] + ": " + what
}

// wordsOnly reports whether s is words: letters and spaces, nothing else.
func wordsOnly(s string) bool {
	return strings.TrimSpace(s) != "" && strings.TrimLeft(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ") == ""
}

var yamlLine = regexp.MustCompile(`line (\d+): ([^\n]*)`)

// decode is json.Unmarshal with numbers kept as json.Number.
func decode(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	return d.Decode(v)
}

// parser collects the problems of one file.
type parser struct {
	readToken func(string) ([]byte, error)
	problems  []string
	names     map[string]int
	digests   map[[sha256.Size]byte]int
}

// bad records a problem of where ("apps[2] (orders).rate", or "" for the
// file).
func (p *parser) bad(where, format string, args ...any) {
	if len(p.problems) == maxErrors {
		p.problems = append(p.problems, "(more problems not listed)")
	}
	if len(p.problems) > maxErrors {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if where != "" {
		msg = where + ": " + msg
	}
	p.problems = append(p.problems, msg)
}

func (p *parser) err() error {
	if len(p.problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(p.problems, "; "))
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// app parses apps[i]; nil when it has a problem (recorded).
func (p *parser) app(i int, raw json.RawMessage) *App {
	at := "apps[" + strconv.Itoa(i) + "]"
	var f map[string]json.RawMessage
	if decode(raw, &f) != nil || f == nil {
		p.bad(at, "want an object with the fields %s", fieldList)
		return nil
	}
	before := len(p.problems)
	a := &App{limit: rate.Inf}
	var name string
	if raw, ok := f["name"]; !ok {
		p.bad(at, "name is required")
	} else if decode(raw, &name) != nil || len(name) > maxName || !validName.MatchString(name) {
		p.bad(at+".name", "want 1 to %d letters, digits, '_', '.' or '-', starting with a letter or a digit", maxName)
	} else {
		a.name = name
		at += " (" + name + ")"
		if j, dup := p.names[name]; dup {
			p.bad(at, "the name of apps[%d] too: names must be unique", j)
		}
		if p.names == nil {
			p.names = map[string]int{}
		}
		p.names[name] = i
	}
	for k := range f {
		switch k {
		case "name", "token_sha256", "token_file", "exchanges", "routing_keys", "rate", "burst":
		default:
			p.bad(at, "an unknown field (the fields are %s)", fieldList)
		}
	}

	p.token(at, f, a, i)
	p.scope(at, f, a)
	p.rate(at, f, a)
	if len(p.problems) > before {
		return nil
	}
	if a.bucket == nil && a.limit != rate.Inf {
		a.bucket = rate.NewLimiter(a.limit, a.burst)
	}
	return a
}

// token reads token_sha256 or token_file into a.digest.
func (p *parser) token(at string, f map[string]json.RawMessage, a *App, i int) {
	rawSum, hasSum := f["token_sha256"]
	rawFile, hasFile := f["token_file"]
	switch {
	case hasSum && hasFile:
		p.bad(at, "give token_sha256 or token_file, not both")
		return
	case !hasSum && !hasFile:
		p.bad(at, "token_sha256 or token_file is required")
		return
	case hasSum:
		var s string
		var b []byte
		err := decode(rawSum, &s)
		if err == nil {
			b, err = hex.DecodeString(s)
		}
		if err != nil || len(b) != sha256.Size {
			p.bad(at+".token_sha256", "want the SHA-256 of the token as 64 hexadecimal digits, in quotes (printf %%s \"$TOKEN\" | sha256sum)")
			return
		}
		a.digest = [sha256.Size]byte(b)
	default:
		var path string
		if decode(rawFile, &path) != nil || path == "" {
			p.bad(at+".token_file", "want the path of a file holding the token")
			return
		}
		b, err := p.readToken(path)
		if err != nil {
			p.bad(at+".token_file", "%v", err)
			return
		}
		token := bytes.TrimSpace(b)
		if len(token) == 0 {
			p.bad(at+".token_file", "%s is empty", path)
			return
		}
		a.digest = sha256.Sum256(token)
		clear(b)
	}
	if j, dup := p.digests[a.digest]; dup {
		p.bad(at, "the token of apps[%d] too: each app needs a token of its own", j)
		return
	}
	if p.digests == nil {
		p.digests = map[[sha256.Size]byte]int{}
	}
	p.digests[a.digest] = i
}

// scope reads exchanges and routing_keys.
func (p *parser) scope(at string, f map[string]json.RawMessage, a *App) {
	if raw, ok := f["exchanges"]; ok {
		var list []json.RawMessage
		if decode(raw, &list) != nil {
			p.bad(at+".exchanges", "want a list of exchange names")
		}
		a.exchanges = make(map[string]struct{}, len(list))
		for j, raw := range list {
			var e string
			if decode(raw, &e) != nil || (e != EveryExchange && !validExchangeName(e)) {
				p.bad(at+".exchanges["+strconv.Itoa(j)+"]", "want an exchange name (letters, digits, '-', '_', '.', ':', at most 255 bytes), %s for the default exchange or %s for every exchange, in quotes", DefaultExchangeName, EveryExchange)
				continue
			}
			switch e {
			case EveryExchange:
				a.everyExchange = true
			case DefaultExchangeName:
				a.exchanges[""] = struct{}{}
			default:
				a.exchanges[e] = struct{}{}
			}
		}
	}
	raw, ok := f["routing_keys"]
	if !ok {
		return
	}
	var list []json.RawMessage
	if decode(raw, &list) != nil || list == nil {
		p.bad(at+".routing_keys", "want a list of AMQP topic patterns (leave it out for every routing key)")
		return
	}
	if len(list) == 0 {
		p.bad(at+".routing_keys", "an empty list: leave it out for every routing key, or name the patterns")
		return
	}
	a.keys = make([]pattern, 0, len(list))
	for j, raw := range list {
		var k string
		if decode(raw, &k) != nil || len(k) > maxShortStr {
			p.bad(at+".routing_keys["+strconv.Itoa(j)+"]", "want an AMQP topic pattern of at most 255 bytes, in quotes (words separated by '.', * for one word, # for any number)")
			continue
		}
		a.keys = append(a.keys, parsePattern(k))
	}
}

// rate reads rate and burst.
func (p *parser) rate(at string, f map[string]json.RawMessage, a *App) {
	rawRate, hasRate := f["rate"]
	rawBurst, hasBurst := f["burst"]
	if !hasRate {
		if hasBurst {
			p.bad(at+".burst", "given without a rate")
		}
		return
	}
	var n json.Number
	var r float64
	err := decode(rawRate, &n)
	if err == nil {
		r, err = n.Float64()
	}
	if err != nil || !(r > 0) || math.IsInf(r, 0) {
		p.bad(at+".rate", "want a positive number of messages per second (leave it out for no limit)")
		return
	}
	a.limit = rate.Limit(r)
	a.burst = int(min(math.Max(1, math.Ceil(r)), maxBurst))
	if !hasBurst {
		return
	}
	var b int64
	err = decode(rawBurst, &n)
	if err == nil {
		b, err = n.Int64()
	}
	if err != nil || b < 1 || b > maxBurst {
		p.bad(at+".burst", "want a whole number of messages from 1 to %d", maxBurst)
		return
	}
	a.burst = int(b)
}

// validExchangeName reports whether e is an exchange name of the file:
// one RabbitMQ accepts (amqpname.ValidExchange) but "" (the default
// exchange is written amq.default in the file).
func validExchangeName(e string) bool { return e != "" && amqpname.ValidExchange(e) }
