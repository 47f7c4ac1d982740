package cloudevents_test

import (
	"fmt"
	"maps"
	"net/http"
	"slices"

	"github.com/publisher-dev/publisher/cloudevents"
)

func ExampleFromBinary() {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("ce-specversion", "1.0")
	h.Set("ce-id", "A234-1234-1234")
	h.Set("ce-source", "https://example.com/orders")
	h.Set("ce-type", "com.example.order.created")
	h.Set("ce-tenant", "acme")

	e, isEvent, err := cloudevents.FromBinary(h)
	fmt.Println(isEvent, err)
	headers := e.AMQPHeaders(cloudevents.ConventionCE, nil)
	for _, k := range slices.Sorted(maps.Keys(headers)) {
		fmt.Printf("%s: %v\n", k, headers[k])
	}

	h.Set("ce-time", "yesterday")
	_, _, err = cloudevents.FromBinary(h)
	fmt.Println(err)
	// Output:
	// true <nil>
	// ce-id: A234-1234-1234
	// ce-source: https://example.com/orders
	// ce-specversion: 1.0
	// ce-tenant: acme
	// ce-type: com.example.order.created
	// content-type: application/json
	// ce-time: "yesterday" is not an RFC 3339 timestamp
}
