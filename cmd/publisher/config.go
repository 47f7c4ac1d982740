package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/kelseyhightower/envconfig"

	"github.com/publisher-dev/publisher/service"
)

// loadConfig reads the PUBLISHER_* variables. Its errors match
// service.ErrConfig, name the variable and say what form it expects, in words
// of their own (not envconfig's), and never quote a secret.
func loadConfig() (*service.Config, error) {
	var c service.Config
	if err := envconfig.Process("PUBLISHER", &c); err != nil {
		return nil, fmt.Errorf("%w: %s", service.ErrConfig, describeEnvError(err))
	}
	if _, set := os.LookupEnv("PUBLISHER_SPOOL_MAX_BYTES"); set && c.SpoolDir == "" {
		return nil, fmt.Errorf("%w: PUBLISHER_SPOOL_MAX_BYTES: set without PUBLISHER_SPOOL_DIR (there is no spool to bound; set both, or neither)", service.ErrConfig)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", service.ErrConfig, err)
	}
	return &c, nil
}

// secretVariables are never quoted, whatever is wrong with them.
var secretVariables = map[string]bool{"PUBLISHER_AMQP_URLS": true, "PUBLISHER_AUTH_TOKEN": true}

// describeEnvError turns envconfig's error ("envconfig.Process: assigning
// PUBLISHER_CONFIRM_TIMEOUT to ConfirmTimeout: converting 'abc' to type
// time.Duration. details: ...") into `PUBLISHER_CONFIRM_TIMEOUT: "abc" is not
// a duration (for example 10s)`.
func describeEnvError(err error) string {
	var pe *envconfig.ParseError
	if !errors.As(err, &pe) {
		return "cannot read the PUBLISHER_* variables"
	}
	var want string
	switch pe.TypeName {
	case "time.Duration":
		want = "a duration (for example 10s, 500ms or 1m30s)"
	case "int", "int64":
		want = "a whole number"
	case "bool":
		want = "true or false"
	default:
		want = "a value of type " + pe.TypeName
	}
	value := fmt.Sprintf("%q", pe.Value)
	if secretVariables[pe.KeyName] {
		value = "the value"
	}
	if pe.TypeName == "int" || pe.TypeName == "int64" {
		if strings.ContainsAny(pe.Value, ".eE") || strings.HasSuffix(strings.ToLower(pe.Value), "b") {
			want += " (of bytes or items, without a unit)"
		}
	}
	return fmt.Sprintf("%s: %s is not %s", pe.KeyName, value, want)
}
