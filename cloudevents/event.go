package cloudevents

import (
	"errors"
	"mime"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/publisher-dev/publisher/internal/amqpname"
)

// SpecVersion is the only CloudEvents version accepted: 1.0 (the spec's
// patch releases 1.0.1 and 1.0.2 keep the attribute value "1.0").
const SpecVersion = "1.0"

// Media types of the structured and batched content modes (JSON format).
const (
	MediaTypeStructured = "application/cloudevents+json"
	MediaTypeBatch      = "application/cloudevents-batch+json"
)

// maxShortStr is the longest AMQP short string: id becomes the message_id
// property and type the type property, both short strings.
const maxShortStr = amqpname.MaxShortStr

// Event is one CloudEvent's context attributes, as canonical strings, and,
// for the structured and batched modes, the event as received. Optional
// attributes are "" when absent.
type Event struct {
	SpecVersion     string
	ID              string
	Source          string
	Type            string
	DataContentType string
	DataSchema      string
	Subject         string
	// Time is the RFC 3339 timestamp as given.
	Time string
	// Extensions maps extension attribute names to their canonical string
	// form (JSON booleans and integers of the structured mode included); nil
	// when there are none.
	Extensions map[string]string

	// Structured is the event's JSON object exactly as received (structured
	// and batched modes), to publish as is; nil in binary mode.
	Structured []byte
	// Data is the event data of a structured event: data_base64 decoded, a
	// JSON string's text when datacontenttype is not JSON, else data's JSON
	// text; nil when absent and in binary mode (where the body is the data).
	Data []byte
}

// ErrInvalid is matched (errors.Is) by every validation error: the request
// is not a valid CloudEvent, a 400.
var ErrInvalid = errors.New("cloudevents: invalid event")

// AttributeError says which attribute is missing or malformed. Name is
// spelled as the request spells it: "ce-time" in binary mode, "time" in the
// structured and batched modes, "Content-Type" or "X-Type" where those
// headers supply the attribute. Its message is meant for the 400 answer as
// is, so it carries no package prefix.
type AttributeError struct {
	Name   string
	Reason string
}

func (e *AttributeError) Error() string { return e.Name + ": " + e.Reason }

// Unwrap makes every AttributeError match ErrInvalid.
func (e *AttributeError) Unwrap() error { return ErrInvalid }

// SyntaxError is a structured or batched body that is not the JSON it must
// be; Offset is the byte offset where reading failed.
type SyntaxError struct {
	Offset int64
	Reason string
}

func (e *SyntaxError) Error() string {
	return "body: " + e.Reason + " at offset " + strconv.FormatInt(e.Offset, 10)
}

// Unwrap makes every SyntaxError match ErrInvalid.
func (e *SyntaxError) Unwrap() error { return ErrInvalid }

// namer spells an attribute's name as the input does.
type namer func(attr string) string

// validate checks e's attributes in a fixed order (specversion, id, source,
// type, datacontenttype, dataschema, subject, time, then the extensions by
// name) and returns the first error. present tells which optional attributes
// were given (an empty subject is invalid, an absent one is not).
func (e *Event) validate(name namer, present func(attr string) bool) error {
	bad := func(attr, reason string) error { return &AttributeError{Name: name(attr), Reason: reason} }
	required := func(attr, v string) error {
		if v == "" && !present(attr) {
			return bad(attr, "missing (a CloudEvent needs specversion, id, source and type)")
		}
		if v == "" {
			return bad(attr, "empty")
		}
		return checkString(name(attr), v)
	}

	if err := required("specversion", e.SpecVersion); err != nil {
		return err
	}
	if e.SpecVersion != SpecVersion {
		return bad("specversion", quote(e.SpecVersion)+" is not supported (only \"1.0\")")
	}
	if err := required("id", e.ID); err != nil {
		return err
	}
	if len(e.ID) > maxShortStr {
		return bad("id", "longer than 255 bytes (it becomes the AMQP message_id)")
	}
	if err := required("source", e.Source); err != nil {
		return err
	}
	if !validURIRef(e.Source) {
		return bad("source", quote(e.Source)+" is not a URI-reference")
	}
	if err := required("type", e.Type); err != nil {
		return err
	}
	if len(e.Type) > maxShortStr {
		return bad("type", "longer than 255 bytes (it becomes the AMQP type property)")
	}
	if e.DataContentType != "" || present("datacontenttype") {
		if !validMediaType(e.DataContentType) {
			return bad("datacontenttype", quote(e.DataContentType)+" is not a media type (RFC 2046)")
		}
	}
	if e.DataSchema != "" || present("dataschema") {
		if err := checkString(name("dataschema"), e.DataSchema); err != nil {
			return err
		}
		if !validAbsoluteURI(e.DataSchema) {
			return bad("dataschema", quote(e.DataSchema)+" is not an absolute URI")
		}
	}
	if e.Subject != "" || present("subject") {
		if e.Subject == "" {
			return bad("subject", "empty")
		}
		if err := checkString(name("subject"), e.Subject); err != nil {
			return err
		}
	}
	if e.Time != "" || present("time") {
		if _, err := time.Parse(time.RFC3339Nano, e.Time); err != nil {
			return bad("time", quote(e.Time)+" is not an RFC 3339 timestamp")
		}
	}
	names := make([]string, 0, len(e.Extensions))
	for n := range e.Extensions {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := checkExtensionName(name(n), n); err != nil {
			return err
		}
		if err := checkString(name(n), e.Extensions[n]); err != nil {
			return err
		}
	}
	return nil
}

// ValidID reports whether id is valid as an event id on its own, whatever
// else is wrong with the event: not empty, at most 255 bytes (it becomes the
// AMQP message_id), a CloudEvents String (valid UTF-8 without control
// characters or noncharacters). An answer refusing an invalid event echoes
// its id as the message_id when it is.
func ValidID(id string) bool {
	return id != "" && len(id) <= maxShortStr && checkString("id", id) == nil
}

// checkExtensionName: lowercase ASCII letters and digits (CloudEvents 1.0
// "Naming conventions"), not "data". The spec's 20-character limit is a
// SHOULD, so longer names are accepted (as sdk-go does by default).
func checkExtensionName(shown, n string) error {
	if n == "" {
		return &AttributeError{Name: shown, Reason: "empty attribute name"}
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; !('a' <= c && c <= 'z') && !('0' <= c && c <= '9') {
			return &AttributeError{Name: shown, Reason: quote(n) + " is not a valid attribute name (lowercase letters a-z and digits only)"}
		}
	}
	if n == "data" {
		return &AttributeError{Name: shown, Reason: "\"data\" is reserved and cannot be an attribute"}
	}
	return nil
}

// checkString: a CloudEvents String is valid UTF-8 without control
// characters (U+0000-U+001F, U+007F-U+009F) or Unicode noncharacters.
func checkString(shown, s string) error {
	if !utf8.ValidString(s) {
		return &AttributeError{Name: shown, Reason: "not valid UTF-8"}
	}
	for _, r := range s {
		switch {
		case r < 0x20 || (0x7f <= r && r <= 0x9f):
			return &AttributeError{Name: shown, Reason: "contains a control character"}
		case (0xfdd0 <= r && r <= 0xfdef) || r&0xfffe == 0xfffe:
			return &AttributeError{Name: shown, Reason: "contains a Unicode noncharacter"}
		}
	}
	return nil
}

// quote quotes s for an error message, shortened to 64 bytes.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// validMediaType: type "/" subtype *(";" parameter), RFC 2045/2046 syntax.
func validMediaType(v string) bool {
	mt, _, err := mime.ParseMediaType(v)
	return err == nil && strings.Count(mt, "/") == 1 && !strings.HasPrefix(mt, "/") && !strings.HasSuffix(mt, "/")
}

// isJSONMediaType reports whether a datacontenttype declares JSON
// ("application/json" or a +json suffix); "" means JSON in the JSON format.
func isJSONMediaType(v string) bool {
	if v == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// validURIRef: a URI-reference by RFC 3986 section 4.1. Characters are
// checked against the grammar's alphabet (with %-escapes), a scheme must be
// well formed, a relative reference's first segment may not contain ':'
// (path-noscheme), '[' and ']' may only enclose an IP-literal host, and
// net/url must parse the result.
func validURIRef(s string) bool {
	_, ok := uriScheme(s)
	return ok
}

// validAbsoluteURI: a URI with a scheme (RFC 3986 section 4.3). A fragment
// is tolerated, as sdk-go does: schema references often carry one.
func validAbsoluteURI(s string) bool {
	scheme, ok := uriScheme(s)
	return ok && scheme != ""
}

// uriScheme validates s as a URI-reference and returns its scheme ("" for
// a relative reference).
func uriScheme(s string) (scheme string, ok bool) {
	if s == "" {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~:/?#[]@!$&'()*+,;=", c) >= 0:
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", false
			}
			i += 2
		default:
			return "", false
		}
	}
	if strings.Count(s, "#") > 1 {
		return "", false
	}
	rest := s
	first := s
	if i := strings.IndexAny(s, "/?#"); i >= 0 {
		first = s[:i]
	}
	if i := strings.IndexByte(first, ':'); i >= 0 {
		scheme = first[:i]
		if !validScheme(scheme) {
			return "", false
		}
		rest = s[i+1:]
	}
	if strings.HasPrefix(rest, "//") {
		auth := rest[2:]
		if i := strings.IndexAny(auth, "/?#"); i >= 0 {
			rest, auth = auth[i:], auth[:i]
		} else {
			rest = ""
		}
		if strings.ContainsAny(auth, "[]") {
			host := auth[strings.LastIndexByte(auth, '@')+1:]
			if !strings.HasPrefix(host, "[") || strings.Count(host, "[") != 1 || strings.Count(host, "]") != 1 {
				return "", false
			}
		}
	}
	if strings.ContainsAny(rest, "[]") {
		return "", false
	}
	if _, err := url.Parse(s); err != nil {
		return "", false
	}
	return scheme, true
}

// validScheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
