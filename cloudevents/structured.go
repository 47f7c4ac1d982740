package cloudevents

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// FromStructured reads and validates one structured-mode event
// (application/cloudevents+json, JSON event format): a JSON object whose
// members are the attributes, with data (any JSON value) or data_base64
// (base64 of the data), never both. Core attributes must be JSON strings;
// extensions may be strings, booleans or integers in the CloudEvents
// Integer range; a member whose value is null is absent. Errors name the
// member (an *AttributeError), or the offset where the JSON is malformed (a
// *SyntaxError). On an attribute error the returned Event still holds what
// was read, its ID in particular, so that an answer can name it.
func FromStructured(body []byte) (Event, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return Event{}, jsonError(body, err, "a structured CloudEvent is one")
	}
	if members == nil { // the body was "null"
		return Event{}, &SyntaxError{Offset: firstByte(body), Reason: "not a JSON object (a structured CloudEvent is one)"}
	}
	e := Event{Structured: body}
	present := make(map[string]bool, len(members))
	var data, data64 json.RawMessage
	// Members in a fixed order, id first, so that errors are the same on
	// every run and a later error can still name the event.
	order := make([]string, 0, len(members))
	for name := range members {
		order = append(order, name)
	}
	slices.SortFunc(order, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == "id":
			return -1
		case b == "id":
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, name := range order {
		raw := members[name]
		if string(raw) == "null" {
			continue
		}
		present[name] = true
		switch name {
		case "specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return e, &AttributeError{Name: name, Reason: "must be a JSON string"}
			}
			switch name {
			case "specversion":
				e.SpecVersion = s
			case "id":
				e.ID = s
			case "source":
				e.Source = s
			case "type":
				e.Type = s
			case "datacontenttype":
				e.DataContentType = s
			case "dataschema":
				e.DataSchema = s
			case "subject":
				e.Subject = s
			case "time":
				e.Time = s
			}
		case "data":
			data = raw
		case "data_base64":
			data64 = raw
		default:
			v, err := extensionValue(name, raw)
			if err != nil {
				return e, err
			}
			if e.Extensions == nil {
				e.Extensions = make(map[string]string)
			}
			e.Extensions[name] = v
		}
	}
	if data != nil && data64 != nil {
		return e, &AttributeError{Name: "data_base64", Reason: "cannot be given with data"}
	}
	if err := e.validate(structuredName, func(attr string) bool { return present[attr] }); err != nil {
		return e, err
	}
	switch {
	case data64 != nil:
		var s string
		if err := json.Unmarshal(data64, &s); err != nil {
			return e, &AttributeError{Name: "data_base64", Reason: "must be a JSON string"}
		}
		d, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return e, &AttributeError{Name: "data_base64", Reason: "not valid base64 (RFC 4648)"}
		}
		e.Data = d
	case data != nil:
		var s string
		if !isJSONMediaType(e.DataContentType) && data[0] == '"' && json.Unmarshal(data, &s) == nil {
			e.Data = []byte(s)
		} else {
			e.Data = data
		}
	}
	return e, nil
}

func structuredName(attr string) string { return attr }

// extensionValue is the canonical string of an extension member's value.
func extensionValue(name string, raw json.RawMessage) (string, error) {
	if err := checkExtensionName(name, name); err != nil {
		return "", err
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", &AttributeError{Name: name, Reason: "invalid JSON string"}
		}
		return s, nil
	case 't', 'f':
		return string(raw), nil // true or false, already validated JSON
	case '{', '[':
		return "", &AttributeError{Name: name, Reason: "must be a string, boolean or integer (CloudEvents attributes are not objects or arrays)"}
	default:
		n, err := strconv.ParseInt(string(raw), 10, 32)
		if err != nil {
			return "", &AttributeError{Name: name, Reason: string(raw) + " is not a CloudEvents Integer (a whole number from -2147483648 to 2147483647)"}
		}
		return strconv.FormatInt(n, 10), nil
	}
}

// FromBatch reads a batched-mode body (application/cloudevents-batch+json):
// a JSON array of structured events. events and errs are in request order,
// one per array element: errs[i] is nil when events[i] is valid, else why not
// (and events[i] holds what was read). A body that is not a JSON array, or
// whose JSON is malformed anywhere, is a whole-body *SyntaxError naming the
// offset; the events are then nil. An empty array is no error.
func FromBatch(body []byte) (events []Event, errs []error, err error) {
	// The whole body's syntax first, for one consistent offset wherever it
	// breaks (trailing data included).
	var whole json.RawMessage
	if err := json.Unmarshal(body, &whole); err != nil {
		return nil, nil, jsonError(body, err, "a batch must be a JSON array of events")
	}
	if whole[0] != '[' {
		return nil, nil, &SyntaxError{Offset: firstByte(body), Reason: "not a JSON array (a batch of CloudEvents is one)"}
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(whole, &elems); err != nil {
		return nil, nil, jsonError(body, err, "a batch must be a JSON array of events")
	}
	events, errs = make([]Event, len(elems)), make([]error, len(elems))
	for i, raw := range elems {
		if raw[0] != '{' {
			errs[i] = &AttributeError{Name: "event", Reason: "not a JSON object"}
			continue
		}
		events[i], errs[i] = FromStructured(raw)
	}
	return events, errs, nil
}

// jsonError turns an encoding/json error into a SyntaxError whose offset is
// that of the byte where reading failed (encoding/json counts the bytes read
// up to and including it), or the body's length when it ended too soon.
func jsonError(body []byte, err error, typeReason string) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off := se.Offset
		if !strings.Contains(se.Error(), "unexpected end") && off > 0 {
			off--
		}
		return &SyntaxError{Offset: off, Reason: "invalid JSON (" + se.Error() + ")"}
	case errors.As(err, &te):
		return &SyntaxError{Offset: firstByte(body), Reason: "not a JSON object (" + typeReason + ")"}
	default:
		return &SyntaxError{Offset: 0, Reason: err.Error()}
	}
}

// firstByte is the offset of the first non-space byte.
func firstByte(body []byte) int64 {
	return int64(len(body) - len(bytes.TrimLeft(body, " \t\r\n")))
}
