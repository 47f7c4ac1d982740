// Command pubbench measures, against one RabbitMQ broker in one run, the
// confirmed messages per second and the p50/p99 latency of ways to publish
// with confirms:
//
//	(a) service    the publisher service over HTTP at concurrency -c (pubbench
//	               builds it and runs it as a child process on free loopback
//	               ports)
//	(b) raw        amqp091-go, -c goroutines each with its own confirm channel
//	               publishing and waiting for its own confirm
//	(c) pipelined  amqp091-go, -pipe-channels channels with -pipe-window
//	               confirms in flight each
//	(c′) best      the same client with the fastest setting (channels x
//	               window) of a search before the rounds (-best-search), or
//	               -best: the ceiling the batch and stream modes are held to
//	(d) mgmt       RabbitMQ's management API publish endpoint, -c clients
//	(e) spooled    a second service child with a durable spool
//	               (PUBLISHER_SPOOL_DIR in a new temporary directory under
//	               -spool-parent, removed afterwards), -c clients sending
//	               "Prefer: respond-async": msgs/s counts the 202 answers
//	               (durable on the service's disk, not yet confirmed by the
//	               broker); after the load pubbench waits until
//	               publisher_spool_messages is 0 and reports the drain time and
//	               the end-to-end rate, accepted / (load + drain)
//	(f) batch      the service's POST /v1/batch: -batch-c lean keep-alive
//	               clients, each posting -batch-size messages per request; a
//	               message counts when its result has status 200; one latency
//	               sample per request
//	(g) stream     the service's POST /v1/stream: -streams full-duplex NDJSON
//	               streams, each writing lines while it reads the results,
//	               with at most -stream-window lines unanswered; a message
//	               counts when its result line has status 200; one latency
//	               sample per message (its line written to its result read)
//	(h) traced     mode (a) against a third service child with OpenTelemetry
//	               tracing on, exporting over OTLP/HTTP to a sink inside
//	               pubbench (whose CPU counts as pubbench's)
//
// Modes service, batch and stream load the same service child. It prints a
// table, the ratios (a)/(b), (a)/(c), (a)/(d), (e)/(a), (f)/(c), (g)/(c),
// (f)/(b), (g)/(b), (h)/(a), (f)/(c′) and (g)/(c′) (over all rounds, and the
// median of each round's ratio), the CPU each process spent per message, and
// the service's RSS while it holds -memory-messages messages behind a broker
// memory alarm. scripts/bench.sh starts a private broker and runs it:
//
//	bash scripts/bench.sh -duration 5s
//
// pubbench is a module of its own (bench/go.mod), so the service's module,
// its dependencies and its go test ./... hold only the service. It builds
// the service in -service-dir (the repository root) with the service's own
// go.mod; run it from bench/ (go run . -help). It uses the parent module's
// internal/svcproc and internal/promtext through the replace directive in
// bench/go.mod (Go allows the import: bench's import path is under the
// parent's).
//
// Every mode is bounded by -warmup plus -duration (plus the 30 s timeout of
// the operations in flight at its end; mode spooled plus
// -spool-drain-timeout); only loopback addresses are used for the service.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// logf writes a progress line to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pubbench: "+format+"\n", args...)
}

// bench is one run of pubbench: its configuration, the service children and
// the notes for the report.
type bench struct {
	cfg       *config
	body      []byte
	svc       *service    // mode service (and the memory measurement)
	spoolSvc  *service    // mode spooled
	tracedSvc *service    // mode traced
	sink      *otlpSink   // where mode traced's service exports its spans
	best      pipeSetting // mode best's (c′) setting: the search's fastest, or -best
	brokerPid string
	notes     []string
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "pubbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "pubbench:", err)
		os.Exit(1)
	}
}

// run measures cfg.modes over cfg.rounds, then the service's memory, and
// prints the report.
func run(ctx context.Context, cfg *config) error {
	b := &bench{cfg: cfg, body: makeBody(cfg.size)}
	rep := b.newReport()
	b.readBrokerPid()
	if err := b.purge(); err != nil {
		return err
	}
	defer b.stopServices()
	if err := b.startServices(ctx); err != nil {
		return err
	}
	var err error
	if slicesContains(cfg.modes, modeBest) {
		if rep.BestSearch, err = b.searchBest(ctx); err != nil {
			return err
		}
		rep.Params["best"] = b.best.String()
	}
	aggs, err := b.runRounds(ctx)
	if err != nil {
		return err
	}
	for _, m := range cfg.modes {
		rep.Results = append(rep.Results, b.result(aggs[m]))
	}
	rep.Ratios = ratios(rates(rep.Results))
	setRoundRatios(rep.Ratios, rep.Results)
	rep.Memory = b.measureMemory(ctx)
	if err := b.purge(); err != nil {
		b.note("final purge: %v", err)
	}
	rep.Notes = b.notes
	rep.FinishedAt = time.Now()
	if cfg.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printReport(rep)
}

// note logs a remark and keeps it for the report's notes.
func (b *bench) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	logf("%s", s)
	b.notes = append(b.notes, s)
}

// makeBody returns the n-byte message body every mode sends.
func makeBody(n int) []byte {
	body := make([]byte, n)
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := range body {
		body[i] = alphabet[i%len(alphabet)]
	}
	return body
}
