// Package decoders compares, on the same message objects, the candidates for
// decoding the service's batch and stream entries (docs/performance.md,
// "Decoding message objects"): encoding/json as the service used it,
// encoding/json/v2 (github.com/go-json-experiment/json, the mirror of Go
// 1.27's, with the options of httpapi's entryOptions), github.com/goccy/go-json,
// and the hand-written prototype the issue measured (its fast path for the
// usual object, encoding/json for anything else). Only benchmarks and their
// correctness check live here; the service uses none of this code:
//
//	cd bench && go test -run XXX -bench . ./decoders/
//	cd bench && GOTOOLCHAIN=go1.27.3 go test -run XXX -bench . ./decoders/   # Go 1.27's encoding/json and encoding/json/v2
package decoders
