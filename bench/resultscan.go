package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// This file reads the answers of /v1/batch and /v1/stream without
// encoding/json: the load generator parses one result per confirmed message,
// on the two cores the service and the broker share, so it reads only the
// fields it counts.

// resultObj is what pubbench reads of one result object of /v1/batch or
// /v1/stream: {"index": N, "message_id": "…", "status": 200, "outcome": "…"}
// or with "error": "…" instead of "outcome".
type resultObj struct {
	index  int    // -1 when absent (a batch result has none)
	status int    // -1 when absent
	errRaw []byte // the "error" string as sent (escapes left in); nil when absent
}

// errText is the result's error in words, for the report.
func (r resultObj) errText() string {
	if r.errRaw == nil {
		return fmt.Sprintf("status %d", r.status)
	}
	var s string
	if json.Unmarshal(append(append([]byte{'"'}, r.errRaw...), '"'), &s) != nil {
		s = string(r.errRaw)
	}
	return fmt.Sprintf("status %d: %s", r.status, s)
}

var errResultSyntax = errors.New("pubbench: malformed result")

// parseResult parses b, one result object with nothing but blanks around
// it (a line of /v1/stream).
func parseResult(b []byte) (resultObj, error) {
	r, i, err := parseResultAt(b, skipSpace(b, 0))
	if err != nil {
		return r, err
	}
	if skipSpace(b, i) != len(b) {
		return r, fmt.Errorf("%w: %q after the object", errResultSyntax, b[i:])
	}
	return r, nil
}

// parseResultAt parses the result object that starts at b[i] and returns it
// and the offset after it. The object must be flat (strings, numbers, true,
// false and null); "index" and "status" must be whole numbers.
func parseResultAt(b []byte, i int) (r resultObj, next int, err error) {
	r.index, r.status = -1, -1
	if i >= len(b) || b[i] != '{' {
		return r, i, fmt.Errorf("%w: want '{' at byte %d", errResultSyntax, i)
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return r, i + 1, nil
	}
	for {
		key, j, err := scanString(b, i)
		if err != nil {
			return r, j, err
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return r, i, fmt.Errorf("%w: want ':' at byte %d", errResultSyntax, i)
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return r, i, fmt.Errorf("%w: no value for %q", errResultSyntax, key)
		}
		switch b[i] {
		case '"':
			val, j, err := scanString(b, i)
			if err != nil {
				return r, j, err
			}
			switch string(key) {
			case "error":
				r.errRaw = val
			case "index", "status":
				return r, i, fmt.Errorf("%w: %s is a string", errResultSyntax, key)
			}
			i = j
		case '{', '[':
			return r, i, fmt.Errorf("%w: nested value for %q", errResultSyntax, key)
		default:
			j := i
			for j < len(b) && b[j] != ',' && b[j] != '}' && !isSpace(b[j]) {
				j++
			}
			switch string(key) {
			case "index":
				if r.index, err = parseWhole(b[i:j]); err != nil {
					return r, i, err
				}
			case "status":
				if r.status, err = parseWhole(b[i:j]); err != nil {
					return r, i, err
				}
			}
			i = j
		}
		i = skipSpace(b, i)
		switch {
		case i >= len(b):
			return r, i, fmt.Errorf("%w: unterminated object", errResultSyntax)
		case b[i] == ',':
			i = skipSpace(b, i+1)
		case b[i] == '}':
			return r, i + 1, nil
		default:
			return r, i, fmt.Errorf("%w: want ',' or '}' at byte %d", errResultSyntax, i)
		}
	}
}

// scanString returns the content (escapes left in) of the JSON string that
// starts at b[i], and the offset after its closing quote.
func scanString(b []byte, i int) ([]byte, int, error) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, fmt.Errorf("%w: want '\"' at byte %d", errResultSyntax, i)
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return b[i+1 : j], j + 1, nil
		}
	}
	return nil, len(b), fmt.Errorf("%w: unterminated string at byte %d", errResultSyntax, i)
}

// parseWhole parses a non-negative decimal integer of at most 9 digits.
func parseWhole(b []byte) (int, error) {
	if len(b) == 0 || len(b) > 9 {
		return 0, fmt.Errorf("%w: bad number %q", errResultSyntax, b)
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: bad number %q", errResultSyntax, b)
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// countBatch counts a /v1/batch answer to a request of n messages: ok is the
// results with status 200 (confirmed), failed the rest, and every message
// without a result (all of them when the request was refused whole). err
// says why some failed (the last failed result, or what was wrong with the
// answer); nil when all n were confirmed.
func countBatch(code int, body []byte, n int) (ok, failed int, err error) {
	if code != http.StatusOK && code != http.StatusMultiStatus && code != http.StatusAccepted {
		return 0, n, fmt.Errorf("HTTP %d: %s", code, trimAnswer(body))
	}
	seen := 0
	var lastFail error
	serr := eachBatchResult(body, func(r resultObj) {
		seen++
		if r.status == http.StatusOK {
			ok++
			return
		}
		failed++
		lastFail = errors.New(r.errText())
	})
	err = lastFail
	if serr != nil {
		err = fmt.Errorf("HTTP %d: %w in %s", code, serr, trimAnswer(body))
	}
	if seen != n {
		if serr == nil {
			err = fmt.Errorf("HTTP %d: %d results for %d messages", code, seen, n)
		}
		if seen > n { // which ones are extra cannot be told
			ok = min(ok, n)
			return ok, n - ok, err
		}
		failed += n - seen
	}
	return ok, failed, err
}

// eachBatchResult calls fn with each result of a /v1/batch answer,
// {"results": [result objects]}, in order. It returns an error (wrapping
// errResultSyntax) when the answer is not of that shape, after calling fn
// with the results before the fault.
func eachBatchResult(body []byte, fn func(resultObj)) error {
	b := body
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return fmt.Errorf("%w: want {\"results\": [...]}", errResultSyntax)
	}
	key, j, err := scanString(b, skipSpace(b, i+1))
	if err != nil || string(key) != "results" {
		return fmt.Errorf("%w: want {\"results\": [...]}", errResultSyntax)
	}
	i = skipSpace(b, j)
	if i >= len(b) || b[i] != ':' {
		return fmt.Errorf("%w: want {\"results\": [...]}", errResultSyntax)
	}
	i = skipSpace(b, i+1)
	if i >= len(b) || b[i] != '[' {
		return fmt.Errorf("%w: want {\"results\": [...]}", errResultSyntax)
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		i++
	} else {
		for {
			r, j, err := parseResultAt(b, i)
			if err != nil {
				return err
			}
			fn(r)
			i = skipSpace(b, j)
			if i < len(b) && b[i] == ',' {
				i = skipSpace(b, i+1)
				continue
			}
			if i < len(b) && b[i] == ']' {
				i++
				break
			}
			return fmt.Errorf("%w: want ',' or ']' at byte %d", errResultSyntax, i)
		}
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '}' || skipSpace(b, i+1) != len(b) {
		return fmt.Errorf("%w: want '}' at the end", errResultSyntax)
	}
	return nil
}

// trimAnswer is an answer's body shortened for an error message.
func trimAnswer(b []byte) string {
	const limit = 200
	s := string(b)
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}
