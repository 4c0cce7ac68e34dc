package hashing

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// Dir keeps each upload's hash state in a small file ID.hash (0600) in a
// directory, next to the files of a tusd filestore.
type Dir struct{ dir string }

var _ States = Dir{}

// NewDir returns States in dir, which must exist.
func NewDir(dir string) Dir { return Dir{dir: dir} }

var stateID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func (d Dir) path(id string) (string, error) {
	if !stateID.MatchString(id) {
		return "", fmt.Errorf("hash state: upload id %q is not a plain name", id)
	}
	return filepath.Join(d.dir, id+".hash"), nil
}

// Load implements States.
func (d Dir) Load(_ context.Context, id string) ([]byte, error) {
	p, err := d.path(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoState, id)
	}
	return b, err
}

// Save implements States: a temporary file renamed over the state, not
// fsynced. A state lost in a crash only makes the commit read the upload;
// one that survives the bytes it describes no longer matches the
// upload's offset and is dropped.
func (d Dir) Save(_ context.Context, id string, state []byte) error {
	p, err := d.path(id)
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, state, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Delete implements States.
func (d Dir) Delete(_ context.Context, id string) error {
	p, err := d.path(id)
	if err != nil {
		return err
	}
	for _, name := range []string{p, p + ".tmp"} { // .tmp: a save a crash cut short
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
