//go:build !linux

package spool

import (
	"errors"
	"os"
	"syscall"
)

func fdatasync(f *os.File) error { return f.Sync() }

func fallocate(*os.File, int64) error { return errors.ErrUnsupported }

func freeBytes(string) (int64, error) { return 0, errors.ErrUnsupported }

// isNoSpace tells whether err means the volume is full.
func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }
