// Package amqpname holds what AMQP 0-9-1 and RabbitMQ allow in names, for
// the packages that check a name before it reaches the broker (the publish
// API, the apps file, CloudEvents): one rule, so that a name one accepts the
// others accept too.
package amqpname

// MaxShortStr is the longest AMQP short string, in bytes: exchange and
// queue names, routing keys, and the message_id and type properties.
const MaxShortStr = 255

// ValidExchange reports whether e is an exchange name RabbitMQ accepts:
// letters, digits, '-', '_', '.', ':', at most MaxShortStr bytes; "" is the
// default exchange, and valid.
func ValidExchange(e string) bool {
	if len(e) > MaxShortStr {
		return false
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}
