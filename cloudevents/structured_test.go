package cloudevents

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

const validEvent = `{
	"specversion": "1.0",
	"id": "e-1",
	"source": "/orders",
	"type": "com.example.order.created",
	"datacontenttype": "application/json",
	"time": "2018-04-05T17:31:00Z",
	"data": {"n": 1}
}`

// event is validEvent with members replaced ("" value: removed) or added.
func event(over map[string]string) string {
	members := map[string]string{
		"specversion": `"1.0"`,
		"id":          `"e-1"`,
		"source":      `"/orders"`,
		"type":        `"com.example.order.created"`,
	}
	maps.Copy(members, over)
	var b strings.Builder
	b.WriteString("{")
	first := true
	for k, v := range members {
		if v == "" {
			continue
		}
		if !first {
			b.WriteString(",")
		}
		first = false
		b.WriteString(`"` + k + `":` + v)
	}
	b.WriteString("}")
	return b.String()
}

func TestFromStructuredValid(t *testing.T) {
	checkLeaks(t)
	e, err := FromStructured([]byte(validEvent))
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != "e-1" || e.Type != "com.example.order.created" || e.Source != "/orders" || e.Time != "2018-04-05T17:31:00Z" ||
		e.DataContentType != "application/json" || string(e.Data) != `{"n": 1}` || string(e.Structured) != validEvent {
		t.Fatalf("FromStructured = %+v", e)
	}

	for name, tc := range map[string]struct {
		over map[string]string
		data string
		ext  map[string]string
	}{
		"data_base64":       {map[string]string{"data_base64": `"AAEC/w=="`}, "\x00\x01\x02\xff", nil},
		"text data":         {map[string]string{"datacontenttype": `"text/plain"`, "data": `"hello \u00e9"`}, "hello é", nil},
		"json string data":  {map[string]string{"data": `"hello"`}, `"hello"`, nil},
		"+json string data": {map[string]string{"datacontenttype": `"application/vnd.x+json"`, "data": `"hello"`}, `"hello"`, nil},
		"no data":           {nil, "", nil},
		"null members":      {map[string]string{"subject": "null", "data": "null", "ext": "null"}, "", nil},
		"extensions": {map[string]string{"tenant": `"acme"`, "count": "42", "neg": "-7", "flag": "true", "off": "false"}, "",
			map[string]string{"tenant": "acme", "count": "42", "neg": "-7", "flag": "true", "off": "false"}},
	} {
		e, err := FromStructured([]byte(event(tc.over)))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if string(e.Data) != tc.data || !maps.Equal(e.Extensions, tc.ext) {
			t.Errorf("%s: data %q extensions %v; want %q %v", name, e.Data, e.Extensions, tc.data, tc.ext)
		}
	}
}

func TestFromStructuredErrors(t *testing.T) {
	checkLeaks(t)
	for name, tc := range map[string]struct {
		body string
		want string
	}{
		"missing id":            {event(map[string]string{"id": ""}), "id: missing (a CloudEvent needs specversion, id, source and type)"},
		"missing specversion":   {event(map[string]string{"specversion": ""}), "specversion: missing (a CloudEvent needs specversion, id, source and type)"},
		"null type is absent":   {event(map[string]string{"type": "null"}), "type: missing (a CloudEvent needs specversion, id, source and type)"},
		"empty source":          {event(map[string]string{"source": `""`}), "source: empty"},
		"numeric id":            {event(map[string]string{"id": "42"}), "id: must be a JSON string"},
		"specversion number":    {event(map[string]string{"specversion": "1.0"}), "specversion: must be a JSON string"},
		"specversion 0.3":       {event(map[string]string{"specversion": `"0.3"`}), `specversion: "0.3" is not supported (only "1.0")`},
		"bad time":              {event(map[string]string{"time": `"yesterday"`}), `time: "yesterday" is not an RFC 3339 timestamp`},
		"bad source":            {event(map[string]string{"source": `"a b"`}), `source: "a b" is not a URI-reference`},
		"relative dataschema":   {event(map[string]string{"dataschema": `"s.json"`}), `dataschema: "s.json" is not an absolute URI`},
		"bad datacontenttype":   {event(map[string]string{"datacontenttype": `"json"`}), `datacontenttype: "json" is not a media type (RFC 2046)`},
		"empty subject":         {event(map[string]string{"subject": `""`}), "subject: empty"},
		"data and data_base64":  {event(map[string]string{"data": `1`, "data_base64": `"AA=="`}), "data_base64: cannot be given with data"},
		"bad base64":            {event(map[string]string{"data_base64": `"!!"`}), "data_base64: not valid base64 (RFC 4648)"},
		"base64 not a string":   {event(map[string]string{"data_base64": `[1]`}), "data_base64: must be a JSON string"},
		"uppercase extension":   {event(map[string]string{"myExt": `"v"`}), `myExt: "myExt" is not a valid attribute name (lowercase letters a-z and digits only)`},
		"object extension":      {event(map[string]string{"ext": `{"a":1}`}), "ext: must be a string, boolean or integer (CloudEvents attributes are not objects or arrays)"},
		"array extension":       {event(map[string]string{"ext": `[1]`}), "ext: must be a string, boolean or integer (CloudEvents attributes are not objects or arrays)"},
		"fractional extension":  {event(map[string]string{"ext": `1.5`}), "ext: 1.5 is not a CloudEvents Integer (a whole number from -2147483648 to 2147483647)"},
		"too large extension":   {event(map[string]string{"ext": `2147483648`}), "ext: 2147483648 is not a CloudEvents Integer (a whole number from -2147483648 to 2147483647)"},
		"control in extension":  {event(map[string]string{"ext": `"a\u0007"`}), "ext: contains a control character"},
		"id too long":           {event(map[string]string{"id": `"` + strings.Repeat("x", 256) + `"`}), "id: longer than 255 bytes (it becomes the AMQP message_id)"},
		"control in id":         {event(map[string]string{"id": `"a\nb"`}), "id: contains a control character"},
		"errors in fixed order": {event(map[string]string{"a": `{}`, "b": `{}`}), "a: must be a string, boolean or integer (CloudEvents attributes are not objects or arrays)"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := FromStructured([]byte(tc.body))
			var ae *AttributeError
			if !errors.As(err, &ae) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v (%T), want an *AttributeError", err, err)
			}
			if err.Error() != tc.want {
				t.Fatalf("err = %q\nwant  %q", err, tc.want)
			}
		})
	}
}

func TestFromStructuredKeepsIDOnError(t *testing.T) {
	checkLeaks(t)
	e, err := FromStructured([]byte(event(map[string]string{"time": `"yesterday"`, "id": `"keep-me"`})))
	if err == nil || e.ID != "keep-me" {
		t.Fatalf("FromStructured = %+v, %v; want the id kept beside the error", e, err)
	}
}

func TestFromStructuredSyntax(t *testing.T) {
	checkLeaks(t)
	for name, tc := range map[string]struct {
		body string
		want string
	}{
		"not json":  {`{"id": x}`, "body: invalid JSON (invalid character 'x' looking for beginning of value) at offset 7"},
		"an array":  {`  [1]`, "body: not a JSON object (a structured CloudEvent is one) at offset 2"},
		"a string":  {`"x"`, "body: not a JSON object (a structured CloudEvent is one) at offset 0"},
		"null":      {`null`, "body: not a JSON object (a structured CloudEvent is one) at offset 0"},
		"empty":     {``, "body: invalid JSON (unexpected end of JSON input) at offset 0"},
		"truncated": {`{"id":"a"`, "body: invalid JSON (unexpected end of JSON input) at offset 9"},
		"trailing":  {`{} {}`, "body: invalid JSON (invalid character '{' after top-level value) at offset 3"},
	} {
		_, err := FromStructured([]byte(tc.body))
		var se *SyntaxError
		if !errors.As(err, &se) || !errors.Is(err, ErrInvalid) || err.Error() != tc.want {
			t.Errorf("%s: err = %q (%T)\nwant        %q", name, err, err, tc.want)
		}
	}
}

func TestFromBatch(t *testing.T) {
	checkLeaks(t)
	body := `[` + validEvent + `,` + event(map[string]string{"id": `"e-2"`, "time": `"later"`}) + `, 7, ` + event(map[string]string{"id": `"e-4"`}) + `]`
	events, errs, err := FromBatch([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 4 || len(errs) != 4 {
		t.Fatalf("%d events, %d errors; want 4 and 4", len(events), len(errs))
	}
	if errs[0] != nil || events[0].ID != "e-1" || string(events[0].Structured) != validEvent {
		t.Errorf("event 0: %+v, %v", events[0], errs[0])
	}
	if errs[1] == nil || errs[1].Error() != `time: "later" is not an RFC 3339 timestamp` || events[1].ID != "e-2" {
		t.Errorf("event 1: %+v, %v", events[1], errs[1])
	}
	if errs[2] == nil || errs[2].Error() != "event: not a JSON object" {
		t.Errorf("event 2: %v", errs[2])
	}
	if errs[3] != nil || events[3].ID != "e-4" || events[3].Structured == nil {
		t.Errorf("event 3: %+v, %v", events[3], errs[3])
	}

	events, errs, err = FromBatch([]byte(" [ ] "))
	if err != nil || len(events) != 0 || len(errs) != 0 || events == nil {
		t.Errorf("empty batch = %v, %v, %v", events, errs, err)
	}
}

func TestFromBatchWholeBody(t *testing.T) {
	checkLeaks(t)
	for name, tc := range map[string]struct {
		body string
		want string
	}{
		"an object":       {validEvent, "body: not a JSON array (a batch of CloudEvents is one) at offset 0"},
		"indented object": {"\n  {}", "body: not a JSON array (a batch of CloudEvents is one) at offset 3"},
		"a number":        {`42`, "body: not a JSON array (a batch of CloudEvents is one) at offset 0"},
		"empty":           {``, "body: invalid JSON (unexpected end of JSON input) at offset 0"},
		"bad element":     {`[{"id":"a"}, {"id": x}]`, "body: invalid JSON (invalid character 'x' looking for beginning of value) at offset 20"},
		"truncated":       {`[{"id":"a"},`, "body: invalid JSON (unexpected end of JSON input) at offset 12"},
		"trailing comma":  {`[{"id":"a"},]`, "body: invalid JSON (invalid character ']' looking for beginning of value) at offset 12"},
		"after the array": {`[] []`, "body: invalid JSON (invalid character '[' after top-level value) at offset 3"},
		"not json":        {`nope`, "body: invalid JSON (invalid character 'o' in literal null (expecting 'u')) at offset 1"},
	} {
		events, errs, err := FromBatch([]byte(tc.body))
		var se *SyntaxError
		if !errors.As(err, &se) || !errors.Is(err, ErrInvalid) || events != nil || errs != nil {
			t.Errorf("%s: FromBatch = %v, %v, %v (%T); want a whole-body *SyntaxError", name, events, errs, err, err)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%s: err = %q\nwant        %q", name, err, tc.want)
		}
	}
}
