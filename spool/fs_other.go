//go:build !linux

package spool

import (
	"errors"
	"os"
)

func fdatasync(f *os.File) error { return f.Sync() }

func fallocate(*os.File, int64) error { return errors.ErrUnsupported }
