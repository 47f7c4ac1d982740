package apps

import "strings"

// Hand-written, 40 lines: no Go library for RabbitMQ's topic matching is
// served here that is kept up; TestTopicMatchesTheBroker holds this one to a
// real RabbitMQ topic exchange's routing (random patterns and keys, seed
// logged), and TestTopicPatterns to the cases of RabbitMQ's documentation.

// maxWords bounds the words of a pattern: a routing key (and a pattern) is an
// AMQP short string of at most 255 bytes, so at most 128 words.
const maxWords = 128

// pattern is an AMQP topic pattern, split into its words: "*" matches
// exactly one word of the routing key, "#" zero or more, any other word only
// itself. Words are separated by '.'; the empty pattern has no words and
// matches only the empty routing key, as RabbitMQ's topic exchange does
// (rabbit_exchange_type_topic splits "" into no words and "a." into "a" and
// "").
type pattern struct {
	text  string
	words []string
}

func parsePattern(p string) pattern {
	return pattern{text: p, words: splitWords(p)}
}

func splitWords(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// match reports whether key matches p. It runs over the key's words once,
// keeping the set of pattern positions reached (a breadth-first run of the
// pattern's automaton), without allocating: O(words(key) × words(p)).
func (p pattern) match(key string) bool {
	n := len(p.words)
	var curBuf, nextBuf [maxWords + 1]bool
	cur, next := curBuf[:n+1], nextBuf[:n+1]
	cur[0] = true
	p.close(cur)
	rest, more := key, key != ""
	for more {
		var word string
		word, rest, more = strings.Cut(rest, ".")
		clear(next)
		alive := false
		for i := range n {
			if !cur[i] {
				continue
			}
			switch w := p.words[i]; {
			case w == "#":
				next[i] = true // "#" takes the word and stays
				alive = true
			case w == "*" || w == word:
				next[i+1] = true
				alive = true
			}
		}
		if !alive {
			return false
		}
		cur, next = next, cur
		p.close(cur)
	}
	return cur[n]
}

// close adds to set the positions reached from it without taking a word:
// past every "#" (which may match zero words).
func (p pattern) close(set []bool) {
	for i, w := range p.words {
		if set[i] && w == "#" {
			set[i+1] = true
		}
	}
}
