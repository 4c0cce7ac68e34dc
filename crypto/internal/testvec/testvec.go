// Package testvec locates the published test vectors that live beside the
// project checkout in ../shared/vectors. Tests read them in place.
package testvec

import (
	"fmt"
	"os"
	"path/filepath"
)

// Dir returns the shared vectors directory: $UPLOADBOX_VECTORS if set,
// otherwise ../shared/vectors next to the module root.
func Dir() (string, error) {
	if d := os.Getenv("UPLOADBOX_VECTORS"); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(filepath.Dir(d), "shared", "vectors"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s: cannot locate ../shared/vectors (set UPLOADBOX_VECTORS)", wd)
		}
	}
}
