package logthrottle_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/publisher-dev/publisher/internal/logthrottle"
)

func Example() {
	text := slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{} // a fixed output for the example
			}
			return a
		},
	})
	h := logthrottle.New(text, logthrottle.Options{Interval: time.Minute})
	log := slog.New(h).With("component", "spool")

	errFull := errors.New("no space left on device")
	for i := range 1000 {
		log.Error("spool: message not made durable", "message_id", fmt.Sprint("m-", i), "error", errFull)
	}
	log.Info("not throttled")
	log.Info("not throttled")

	// At shutdown: write the counts of the windows still open.
	if err := h.Flush(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// level=ERROR msg="spool: message not made durable" component=spool message_id=m-0 error="no space left on device"
	// level=INFO msg="not throttled" component=spool
	// level=INFO msg="not throttled" component=spool
	// level=ERROR msg="spool: message not made durable" component=spool message_id=m-999 error="no space left on device" repeated=999 interval=1m0s
}
