package amqpname

import (
	"strings"
	"testing"
)

func TestValidExchange(t *testing.T) {
	for _, c := range []struct {
		name string
		want bool
	}{
		{"", true},
		{"events", true},
		{"amq.topic", true},
		{"a-b_c.d:e", true},
		{strings.Repeat("x", MaxShortStr), true},
		{strings.Repeat("x", MaxShortStr+1), false},
		{"with space", false},
		{"slash/", false},
		{"é", false},
		{"nul\x00", false},
	} {
		if got := ValidExchange(c.name); got != c.want {
			t.Errorf("ValidExchange(%q) = %v, want %v", c.name, got, c.want)
		}
	}
}
