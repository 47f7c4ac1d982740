package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/kelseyhightower/envconfig"

	"github.com/publisher-dev/publisher/service"
)

// loadConfig reads the PUBLISHER_* variables. Its errors match
// service.ErrConfig, name the variable and say what form it expects, in words
// of their own (not envconfig's), and never quote a secret.
func loadConfig() (*service.Config, error) {
	var c service.Config
	restore := hideUnprefixed(&c)
	err := envconfig.Process("PUBLISHER", &c)
	restore()
	if err != nil {
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

// hideUnprefixed unsets, until the returned restore is called, every
// unprefixed variable envconfig would read in place of an unset PUBLISHER_*
// one: given a field tagged envconfig:"LOG_LEVEL", envconfig 1.4 falls back
// to LOG_LEVEL when PUBLISHER_LOG_LEVEL is not set, so a container's
// LOG_LEVEL, CHANNELS or AMQP_URLS, meant for another program, would
// configure (or break) this one. Only the PUBLISHER_ names are settings.
// It runs in main before any goroutine reads the environment.
func hideUnprefixed(spec any) (restore func()) {
	hidden := map[string]string{}
	t := reflect.TypeOf(spec).Elem()
	for i := range t.NumField() {
		name := t.Field(i).Tag.Get("envconfig")
		if name == "" {
			continue
		}
		if _, set := os.LookupEnv("PUBLISHER_" + name); set {
			continue
		}
		if v, set := os.LookupEnv(name); set {
			hidden[name] = v
			os.Unsetenv(name)
		}
	}
	return func() {
		for k, v := range hidden {
			os.Setenv(k, v)
		}
	}
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
