package obs

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Spool directories (see the package comment for who writes what).
const (
	DirIn      = "in"
	DirOut     = "out"
	DirOutbox  = "outbox"
	DirRefused = "refused"
)

// spool is the OBS's work directory.
type spool struct{ root string }

func (s spool) dir(name string) string { return filepath.Join(s.root, name) }

// make creates the four directories, 0700: out/, outbox/ and refused/
// hold tokens and keys.
func (s spool) make() error {
	for _, d := range []string{DirIn, DirOut, DirOutbox, DirRefused} {
		if err := os.MkdirAll(s.dir(d), 0o700); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

// list returns the names of the finished *.json files in dir, oldest
// first (name order breaks ties). Dot files are someone's temporary files.
func (s spool) list(dir string) ([]string, error) {
	entries, err := os.ReadDir(s.dir(dir))
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	type named struct {
		name string
		mod  int64
	}
	var files []named
	for _, e := range entries {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".json") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		files = append(files, named{n, info.ModTime().UnixNano()})
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].mod != files[j].mod {
			return files[i].mod < files[j].mod
		}
		return files[i].name < files[j].name
	})
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.name
	}
	return out, nil
}

// outName is the file name of a device's result: its assigned ID, escaped
// so that a CSE-ID ("/cse-1") stays one file name.
func outName(assignedID string) string {
	return url.PathEscape(assignedID) + ".json"
}

// writeDurable writes data to dir/name so that after it returns the file
// is on disk with its full content, whatever crashes next: a temporary file
// in the same directory, fsync, rename, fsync of the directory. A reader
// never sees a partial file (readers skip dot files).
func writeDurable(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return syncDir(dir)
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// remove deletes a file; one that is already gone is not an error.
func remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
