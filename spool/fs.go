package spool

import (
	"io"
	"io/fs"
	"os"
)

// FS is the file-system seam the spool does all of its I/O through. The
// default (a nil Options.FS) is the real operating system. Tests wrap it to
// inject write, fsync and ENOSPC failures.
type FS interface {
	// OpenFile opens a file like os.OpenFile.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	ReadDir(dir string) ([]fs.DirEntry, error)
	MkdirAll(dir string, perm fs.FileMode) error
	// SyncDir fsyncs the directory itself, making creations, renames and
	// removals of its entries durable.
	SyncDir(dir string) error
	// FreeBytes returns the bytes available to the process on the file
	// system holding dir (statfs(2): f_bavail * f_bsize). An error means
	// unknown: the spool then does not clamp segment sizes to free space.
	FreeBytes(dir string) (int64, error)
}

// File is an open file of an FS.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Writer
	// Sync is fsync(2): data and all metadata.
	Sync() error
	// Datasync is fdatasync(2): data and the metadata needed to read it back.
	Datasync() error
	Truncate(size int64) error
	// Allocate makes the file at least size bytes long with every block
	// allocated (fallocate(2), or writing zeros where that is unsupported).
	Allocate(size int64) error
	Stat() (fs.FileInfo, error)
	Close() error
}

// OSFS is the real file system.
type OSFS struct{}

func (OSFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}
func (OSFS) Rename(o, n string) error                  { return os.Rename(o, n) }
func (OSFS) Remove(name string) error                  { return os.Remove(name) }
func (OSFS) ReadDir(dir string) ([]fs.DirEntry, error) { return os.ReadDir(dir) }
func (OSFS) MkdirAll(dir string, perm fs.FileMode) error {
	return os.MkdirAll(dir, perm)
}
func (OSFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (OSFS) FreeBytes(dir string) (int64, error) { return freeBytes(dir) }

type osFile struct{ *os.File }

func (f osFile) Datasync() error { return fdatasync(f.File) }

func (f osFile) Allocate(size int64) error {
	fi, err := f.File.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	if fallocate(f.File, size) == nil {
		return nil
	}
	return writeZeros(f, fi.Size(), size)
}

// writeZeros writes zeros into [from, to) of f.
func writeZeros(f io.WriterAt, from, to int64) error {
	zeros := make([]byte, min(1<<20, to-from))
	for off := from; off < to; {
		n := min(int64(len(zeros)), to-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}
