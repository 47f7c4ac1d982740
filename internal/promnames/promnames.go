// Package promnames extracts the metric names that PromQL expressions, Grafana
// dashboards and Prometheus rule files refer to, so that tests can check them
// against what the service really exposes on /metrics.
//
// It uses a small PromQL tokenizer rather than the Prometheus parser (which
// would pull the whole Prometheus module into the build). The tokenizer skips
// label matchers, strings, comments, range and subquery brackets, numbers and
// durations, function calls, aggregation operators, binary keywords and the
// label lists that follow by/without/on/ignoring/group_left/group_right.
// A `{__name__="x"}` matcher yields the name x.
package promnames

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// keywords are PromQL words that are never metric names when written bare.
var keywords = map[string]bool{
	// binary set and comparison operators
	"and": true, "or": true, "unless": true, "bool": true, "atan2": true,
	// vector matching and grouping
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true,
	// modifiers
	"offset": true,
	// aggregation operators
	"sum": true, "avg": true, "count": true, "min": true, "max": true,
	"group": true, "stddev": true, "stdvar": true, "topk": true, "bottomk": true,
	"count_values": true, "quantile": true, "limitk": true, "limit_ratio": true,
	// number literals
	"inf": true, "nan": true,
}

// labelListKeywords are followed by an optional parenthesised label list.
var labelListKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true,
}

// BaseName returns the metric family name of a series name: it strips one
// histogram/summary suffix (_bucket, _sum or _count). Other names are returned
// unchanged. Note that a plain metric whose name happens to end in one of these
// suffixes is shortened too; callers comparing with an exposition should accept
// either the name or its BaseName.
func BaseName(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(name, suffix) && len(name) > len(suffix) {
			return strings.TrimSuffix(name, suffix)
		}
	}
	return name
}

// FromPromQL returns the metric names referenced in a PromQL expression,
// deduplicated and sorted. Names are returned as written (for example
// "x_bucket"); use BaseName to map them to metric families.
func FromPromQL(expr string) ([]string, error) {
	set := map[string]bool{}
	if err := scan(expr, set); err != nil {
		return nil, err
	}
	return sorted(set), nil
}

func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool {
	return isIdentStart(c) || (c >= '0' && c <= '9')
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

type scanner struct {
	s   string
	pos int
}

func (sc *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("promql %q: at offset %d: %s", sc.s, sc.pos, fmt.Sprintf(format, args...))
}

// skipSpace skips white space and # comments.
func (sc *scanner) skipSpace() {
	for sc.pos < len(sc.s) {
		c := sc.s[sc.pos]
		switch {
		case isSpace(c):
			sc.pos++
		case c == '#':
			for sc.pos < len(sc.s) && sc.s[sc.pos] != '\n' {
				sc.pos++
			}
		default:
			return
		}
	}
}

// readString reads a quoted string starting at sc.pos and returns its
// (unescaped enough for name matching) contents.
func (sc *scanner) readString() (string, error) {
	quote := sc.s[sc.pos]
	start := sc.pos
	sc.pos++
	var b strings.Builder
	for sc.pos < len(sc.s) {
		c := sc.s[sc.pos]
		switch {
		case c == quote:
			sc.pos++
			return b.String(), nil
		case c == '\\' && quote != '`':
			if sc.pos+1 >= len(sc.s) {
				sc.pos = start
				return "", sc.errorf("unterminated string")
			}
			b.WriteByte(sc.s[sc.pos+1])
			sc.pos += 2
		case c == '\n' && quote != '`':
			sc.pos = start
			return "", sc.errorf("newline in string")
		default:
			b.WriteByte(c)
			sc.pos++
		}
	}
	sc.pos = start
	return "", sc.errorf("unterminated string")
}

func (sc *scanner) readIdent() string {
	start := sc.pos
	for sc.pos < len(sc.s) && isIdentChar(sc.s[sc.pos]) {
		sc.pos++
	}
	return sc.s[start:sc.pos]
}

// readMatchers consumes a {...} block, recording __name__="x" matchers.
func (sc *scanner) readMatchers(set map[string]bool) error {
	open := sc.pos
	sc.pos++ // '{'
	for {
		sc.skipSpace()
		if sc.pos >= len(sc.s) {
			sc.pos = open
			return sc.errorf("unterminated label matchers")
		}
		c := sc.s[sc.pos]
		switch {
		case c == '}':
			sc.pos++
			return nil
		case c == ',':
			sc.pos++
		case c == '"' || c == '\'' || c == '`':
			// A quoted metric name or label name (Prometheus 3 UTF-8 syntax).
			name, err := sc.readString()
			if err != nil {
				return err
			}
			sc.skipSpace()
			if sc.pos < len(sc.s) && (sc.s[sc.pos] == ',' || sc.s[sc.pos] == '}') {
				set[name] = true
				continue
			}
			if err := sc.readMatcherRest(name, set); err != nil {
				return err
			}
		case isIdentStart(c):
			label := sc.readIdent()
			if err := sc.readMatcherRest(label, set); err != nil {
				return err
			}
		default:
			return sc.errorf("unexpected %q in label matchers", c)
		}
	}
}

func (sc *scanner) readMatcherRest(label string, set map[string]bool) error {
	sc.skipSpace()
	var op string
	for _, o := range []string{"=~", "!~", "!=", "="} {
		if strings.HasPrefix(sc.s[sc.pos:], o) {
			op = o
			break
		}
	}
	if op == "" {
		return sc.errorf("expected a matcher operator after label %q", label)
	}
	sc.pos += len(op)
	sc.skipSpace()
	if sc.pos >= len(sc.s) || !strings.ContainsRune("\"'`", rune(sc.s[sc.pos])) {
		return sc.errorf("expected a quoted value for label %q", label)
	}
	value, err := sc.readString()
	if err != nil {
		return err
	}
	if label == "__name__" && op == "=" {
		set[value] = true
	}
	return nil
}

// skipBrackets consumes a [range] or [range:step] block; its contents are
// durations (or Grafana variables such as $__rate_interval).
func (sc *scanner) skipBrackets() error {
	open := sc.pos
	end := strings.IndexByte(sc.s[sc.pos:], ']')
	if end < 0 {
		return sc.errorf("unterminated range selector")
	}
	if strings.ContainsAny(sc.s[open+1:open+end], "[{}()\"'") {
		return sc.errorf("unexpected character in range selector")
	}
	sc.pos += end + 1
	return nil
}

// skipLabelList consumes an optional (label, label, ...) list.
func (sc *scanner) skipLabelList() error {
	sc.skipSpace()
	if sc.pos >= len(sc.s) || sc.s[sc.pos] != '(' {
		return nil
	}
	open := sc.pos
	sc.pos++
	for {
		sc.skipSpace()
		if sc.pos >= len(sc.s) {
			sc.pos = open
			return sc.errorf("unterminated label list")
		}
		c := sc.s[sc.pos]
		switch {
		case c == ')':
			sc.pos++
			return nil
		case c == ',':
			sc.pos++
		case isIdentStart(c):
			sc.readIdent()
		case c == '"' || c == '\'' || c == '`':
			if _, err := sc.readString(); err != nil {
				return err
			}
		default:
			return sc.errorf("unexpected %q in label list", c)
		}
	}
}

// skipNumber consumes a number or duration literal (1, 0.5, .5, 1e3, 0x1f,
// 5m, 1h30m, 1_000).
func (sc *scanner) skipNumber() {
	start := sc.pos
	hex := strings.HasPrefix(strings.ToLower(sc.s[start:]), "0x")
	for sc.pos < len(sc.s) {
		c := sc.s[sc.pos]
		if isIdentChar(c) || c == '.' {
			sc.pos++
			continue
		}
		// exponent sign: 1e-3, 1E+3
		if (c == '+' || c == '-') && !hex && sc.pos > start && (sc.s[sc.pos-1] == 'e' || sc.s[sc.pos-1] == 'E') {
			sc.pos++
			continue
		}
		return
	}
}

func scan(expr string, set map[string]bool) error {
	sc := &scanner{s: expr}
	depth := 0
	tokens := 0
	for {
		sc.skipSpace()
		if sc.pos >= len(sc.s) {
			break
		}
		c := sc.s[sc.pos]
		tokens++
		switch {
		case c == '"' || c == '\'' || c == '`':
			if _, err := sc.readString(); err != nil {
				return err
			}
		case c == '{':
			if err := sc.readMatchers(set); err != nil {
				return err
			}
		case c == '}':
			return sc.errorf("unbalanced '}'")
		case c == '[':
			if err := sc.skipBrackets(); err != nil {
				return err
			}
		case c == ']':
			return sc.errorf("unbalanced ']'")
		case c == '(':
			depth++
			sc.pos++
		case c == ')':
			depth--
			if depth < 0 {
				return sc.errorf("unbalanced ')'")
			}
			sc.pos++
		case (c >= '0' && c <= '9') || (c == '.' && sc.pos+1 < len(sc.s) && sc.s[sc.pos+1] >= '0' && sc.s[sc.pos+1] <= '9'):
			sc.skipNumber()
		case isIdentStart(c):
			word := sc.readIdent()
			lower := strings.ToLower(word)
			if labelListKeywords[lower] {
				if err := sc.skipLabelList(); err != nil {
					return err
				}
				continue
			}
			if keywords[lower] {
				continue
			}
			save := sc.pos
			sc.skipSpace()
			isCall := sc.pos < len(sc.s) && sc.s[sc.pos] == '('
			sc.pos = save
			if isCall {
				continue // function call such as rate( or histogram_quantile(
			}
			set[word] = true
		case strings.IndexByte("+-*/%^=!<>,@:", c) >= 0:
			sc.pos++
		default:
			return sc.errorf("unexpected character %q", c)
		}
	}
	if depth != 0 {
		return sc.errorf("unbalanced '('")
	}
	if tokens == 0 {
		return errors.New("promql: empty expression")
	}
	return nil
}

// FromDashboard returns the metric names referenced by every "expr" field
// found anywhere in a Grafana dashboard JSON document (panels, nested row
// panels, targets, library panels ...), deduplicated and sorted. Empty exprs
// are ignored.
func FromDashboard(data []byte) ([]string, error) {
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	set := map[string]bool{}
	if err := walkExprs(doc, "$", set); err != nil {
		return nil, err
	}
	return sorted(set), nil
}

func walkExprs(v any, path string, set map[string]bool) error {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			child := v[k]
			if s, ok := child.(string); ok && k == "expr" {
				if strings.TrimSpace(s) == "" {
					continue
				}
				if err := scan(s, set); err != nil {
					return fmt.Errorf("dashboard %s.expr: %w", path, err)
				}
				continue
			}
			if err := walkExprs(child, path+"."+k, set); err != nil {
				return err
			}
		}
	case []any:
		for i, child := range v {
			if err := walkExprs(child, fmt.Sprintf("%s[%d]", path, i), set); err != nil {
				return err
			}
		}
	}
	return nil
}

// exprString accepts a YAML scalar that may have been decoded as a number
// (expr: 1) as well as a string.
type exprString string

func (e *exprString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*e = exprString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("expr must be a string or a number, got %s", b)
	}
	*e = exprString(n.String())
	return nil
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert  string     `json:"alert"`
			Record string     `json:"record"`
			Expr   exprString `json:"expr"`
		} `json:"rules"`
	} `json:"groups"`
}

// FromRules returns the metric names referenced by the expressions of a
// Prometheus rule file (alerting and recording rules), deduplicated and
// sorted. Names produced by a recording rule of the same file are not
// returned, since they are not exposed by the scraped service.
func FromRules(data []byte) ([]string, error) {
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if len(rf.Groups) == 0 {
		return nil, errors.New("rules: no rule groups")
	}
	set := map[string]bool{}
	recorded := map[string]bool{}
	for _, g := range rf.Groups {
		for i, r := range g.Rules {
			name := r.Alert
			if r.Record != "" {
				name = r.Record
				recorded[r.Record] = true
			}
			if err := scan(string(r.Expr), set); err != nil {
				return nil, fmt.Errorf("rules: group %q rule %d (%s): %w", g.Name, i, name, err)
			}
		}
	}
	for r := range recorded {
		delete(set, r)
	}
	return sorted(set), nil
}
